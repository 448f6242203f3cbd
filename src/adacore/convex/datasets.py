"""Binary data sets for the convex experiment, with labels in {-1, +1}.

``breast_cancer``
    scikit-learn's 569 x 30 Wisconsin set; +1 = benign (its target 1).
``digits``
    scikit-learn's 1,797 8 x 8 digits as ONE one-vs-rest problem: +1 = the digit
    ``positive_class`` (default 0), -1 = the nine others (about 10% positives).
``covtype_synthetic``, ``ijcnn1_synthetic``
    ``make_classification`` in the shapes of covtype (581,012 x 54, classes about 49/51)
    and ijcnn1 (49,990 x 22, about 10% positives), times ``scale`` rows (seeded by
    ``seed``). Only the shapes and class balance are those of the real sets.
``libsvm``
    A LIBSVM / svmlight file at ``path`` (and optionally a test file at ``test_path``),
    read with :func:`sklearn.datasets.load_svmlight_files` into a CSR matrix. Two label
    values map to -1 (the smaller) and +1 (the larger), e.g. covtype.binary's 1 / 2 and
    ijcnn1's -1 / +1; more label values need ``positive_class`` (one-vs-rest).

Without a test file, a stratified ``test_fraction`` of the examples is held out (seeded by
``split_seed``). ``standardize`` scales the features on the training rows: dense X to zero
mean and unit variance, a sparse X by each column's largest absolute value (no centring,
which would densify it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from adacore.validation import InputError, check_choice, check_positive, fail

__all__ = ["ConvexData", "DATASETS", "SYNTHETIC_SHAPES", "load_convex_data", "read_libsvm",
           "synthetic_classification"]

DATASETS = ("breast_cancer", "digits", "covtype_synthetic", "ijcnn1_synthetic", "libsvm")
SYNTHETIC_SHAPES = {"covtype_synthetic": (581_012, 54), "ijcnn1_synthetic": (49_990, 22)}
_SYNTHETIC_OPTIONS = {
    "covtype_synthetic": dict(n_informative=24, n_redundant=12, n_clusters_per_class=4,
                              weights=[0.51], flip_y=0.1, class_sep=0.8),
    "ijcnn1_synthetic": dict(n_informative=12, n_redundant=4, n_clusters_per_class=3,
                             weights=[0.9], flip_y=0.02, class_sep=1.0),
}


@dataclass
class ConvexData:
    """Train and test rows (dense float64 or CSR) with labels in {-1, +1}."""

    X_train: object
    y_train: np.ndarray
    X_test: object
    y_test: np.ndarray
    name: str
    info: dict = field(default_factory=dict)


def _signed(labels: np.ndarray, positive_class, source: str) -> np.ndarray:
    values = np.unique(labels)
    if positive_class is not None:
        if not np.isin(positive_class, values):
            raise InputError(f"positive_class: got {positive_class!r}, expected one of the "
                             f"labels of {source}: {values[:10].tolist()}")
        return np.where(labels == positive_class, 1.0, -1.0)
    if values.shape[0] != 2:
        raise InputError(f"positive_class: {source} has {values.shape[0]} label values "
                         f"({values[:10].tolist()}), expected 2, or set positive_class "
                         f"for a one-vs-rest problem")
    return np.where(labels == values[1], 1.0, -1.0)


def read_libsvm(path, test_path=None):
    """(X, y) or (X, y, X_test, y_test) from LIBSVM files, sharing one feature count.

    Raises InputError naming the path for a missing file or one that does not parse.
    """
    from sklearn.datasets import load_svmlight_files   # deferred: importing sklearn is slow

    paths = [path] + ([test_path] if test_path is not None else [])
    for name, item in zip(("path", "test_path"), paths):
        if not isinstance(item, (str, Path)) or not Path(item).is_file():
            raise InputError(f"{name}: no file at {str(item)!r}, expected a LIBSVM file")
    try:
        loaded = load_svmlight_files([str(item) for item in paths], dtype=np.float64)
    except (ValueError, UnicodeDecodeError, OSError, IndexError) as error:
        raise InputError(f"path: {', '.join(repr(str(p)) for p in paths)} did not parse as "
                         f"LIBSVM / svmlight ({error})") from error
    X = loaded[0]
    if X.shape[0] == 0:
        raise InputError(f"path: {str(path)!r} holds no examples")
    return tuple(sp.csr_matrix(item) if sp.issparse(item) else item for item in loaded)


def _standardize(X_train, X_test):
    if sp.issparse(X_train):
        scale = np.asarray(abs(X_train).max(axis=0).todense()).reshape(-1)
        scale[scale == 0] = 1.0
        inverse = sp.diags(1.0 / scale)
        return sp.csr_matrix(X_train @ inverse), sp.csr_matrix(X_test @ inverse)
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    std[std == 0] = 1.0
    return (X_train - mean) / std, (X_test - mean) / std


def synthetic_classification(dataset: str, *, scale: float = 1.0, seed: int = 0):
    """(X, y): ``make_classification`` in the shape of covtype or ijcnn1 (see the module
    docstring), round(scale * rows) rows (at least 100), labels in {-1, +1}, unscaled."""
    from sklearn.datasets import make_classification

    check_choice("dataset", dataset, SYNTHETIC_SHAPES)
    scale = check_positive("scale", scale)
    rows, columns = SYNTHETIC_SHAPES[dataset]
    n = max(100, int(round(rows * scale)))
    X, labels = make_classification(n_samples=n, n_features=columns, random_state=seed,
                                    **_SYNTHETIC_OPTIONS[dataset])
    return X, 2.0 * labels - 1.0


def load_convex_data(dataset: str, *, path=None, test_path=None, scale: float = 1.0,
                     positive_class=None, test_fraction: float = 0.2, split_seed: int = 0,
                     seed: int = 0, standardize: bool = True) -> ConvexData:
    """Load one of :data:`DATASETS` (see the module docstring) as a binary problem."""
    from sklearn.model_selection import train_test_split

    check_choice("dataset", dataset, DATASETS)
    scale = check_positive("scale", scale)
    if not 0.0 < float(test_fraction) < 1.0:
        raise fail("test_fraction", test_fraction, "a number in (0, 1)")
    test = None
    if dataset == "libsvm":
        if path is None:
            raise InputError("path: dataset 'libsvm' needs the path of a LIBSVM file")
        loaded = read_libsvm(path, test_path)
        X, labels = loaded[0], loaded[1]
        y = _signed(labels, positive_class, repr(str(path)))
        if test_path is not None:
            test = (loaded[2], _signed(loaded[3], positive_class, repr(str(test_path))))
    elif dataset in SYNTHETIC_SHAPES:
        X, y = synthetic_classification(dataset, scale=scale, seed=seed)
    else:
        from sklearn.datasets import load_breast_cancer, load_digits
        bunch = load_breast_cancer() if dataset == "breast_cancer" else load_digits()
        X = bunch.data.astype(np.float64)
        if dataset == "digits":
            y = _signed(bunch.target, 0 if positive_class is None else positive_class, "digits")
        else:
            y = 2.0 * bunch.target - 1.0
    if test is None:
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=test_fraction, random_state=split_seed, stratify=y)
    else:
        X_train, y_train, (X_test, y_test) = X, y, test
    if standardize:
        X_train, X_test = _standardize(X_train, X_test)
    info = {"n_train": int(X_train.shape[0]), "n_test": int(X_test.shape[0]),
            "n_features": int(X_train.shape[1]), "sparse": bool(sp.issparse(X_train)),
            "positive_share": float((y_train > 0).mean())}
    return ConvexData(X_train, np.asarray(y_train, dtype=np.float64), X_test,
                      np.asarray(y_test, dtype=np.float64), dataset, info)
