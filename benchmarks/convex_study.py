"""Which convex AdaCore beats random coresets? Residuals on real and badly scaled sets.

For every data set, train/test split, fraction and selection method: select a weighted
coreset of the training rows with :func:`adacore.convex.select_coreset`, fit L2 logistic
regression on it with scikit-learn (``LogisticRegression(C=1 / (alpha * sum of weights),
solver="newton-cholesky")`` and ``sample_weight``: our objective, mean log-loss +
alpha / 2 ||w||^2, exactly), and record the loss residual (L(w_S) - L*) / L* on the FULL
training set (L* from a full-data fit polished by L-BFGS) and the test accuracy. Random
coresets are drawn with ``--random-seeds`` seeds per split and summarised by their median.

Sets (scikit-learn's bundled data, 80/20 stratified splits seeded 0..splits-1):
breast_cancer; digits_3 and digits_8 (one digit against the other nine); wine (class 1
against the rest); iris (versicolor against the rest: not linearly separable); diabetes
(target above its median); each standardised on the training rows, and breast_cancer_raw,
wine_raw unstandardised (their features span 1e-3..1e3). Synthetic: make_classification
(3,000 x 20, 8 informative, 4 redundant, 5% flipped labels), standardised ("synthetic"),
its columns multiplied by 10^U(-3, 3) and left raw ("synthetic_scaled_raw") or
standardised again ("synthetic_scaled_std", which standardisation maps back onto
"synthetic" up to rounding).

Methods (name: select_coreset options):
``random``; ``craig@initial`` (CRAIG as published, gradients at w = 0); ``craig@newton``;
``diagonal@initial`` (the poster's per-example diagonal at w = 0, the old default);
``diagonal_releps@initial`` (study only: g / (h_i + hbar), damping relative to the
averaged curvature); ``exact@initial``; ``mean_diagonal@initial``, ``mean@initial`` (power
1/2); ``diagonal@newton``, ``exact@newton``; ``mean_diagonal@newton`` (the new default,
power 1/2), ``mean_diagonal_p1@newton`` (power 1), ``mean@newton`` (power 1/2),
``mean_p1@newton`` (power 1, the poster's H^-1 g with the averaged Hessian);
``mean_diagonal@newton2`` (two Newton steps); ``mean_diagonal@pilot`` (SGD pilot on a 5%
sample); ``mean_diagonal@optimum`` (selected at the full-data optimum w*: an oracle, not
a method, to show what the selection point is worth).

Run (about 4 minutes per alpha on one core):

    OMP_NUM_THREADS=1 python benchmarks/convex_study.py --alpha 1e-3 --out study_1e-3.json
    python benchmarks/convex_study.py --report study_1e-3.json [--methods a,b]
    python benchmarks/convex_study.py --diagnose --alpha 1e-3
    OMP_NUM_THREADS=1 python benchmarks/convex_study.py --large     # about 40 minutes

Summaries: per set and fraction the median over splits of each method's residual and its
ratio to the random median of the same split (below 1: better than random), and, over
sets, the geometric mean of those per-set median ratios and the number of (set, split)
pairs where the method beat the random median.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch

from adacore.convex import get_loss, reference_solution, select_coreset
from adacore.selection.budgets import budget_from_fraction, per_class_budgets
from adacore.selection.per_class import per_class_facility_location

FRACTIONS = (0.02, 0.05, 0.1, 0.3)
# standardising the scaled set undoes the scaling: its rows equal "synthetic"'s up to
# rounding (and its tables did, digit for digit); the summaries over sets leave it out
DUPLICATES = ("synthetic_scaled_std",)
SETS = ("breast_cancer", "breast_cancer_raw", "digits_3", "digits_8", "wine", "wine_raw",
        "iris", "diabetes", "synthetic", "synthetic_scaled_raw", "synthetic_scaled_std")
METHODS = {
    "craig@initial": dict(method="craig", at="initial"),
    "craig@newton": dict(method="craig", at="newton"),
    "diagonal@initial": dict(hessian="diagonal", at="initial"),
    "diagonal_releps@initial": None,
    "exact@initial": dict(hessian="exact", at="initial"),
    "mean_diagonal@initial": dict(hessian="mean_diagonal", at="initial"),
    "mean@initial": dict(hessian="mean", at="initial"),
    "diagonal@newton": dict(hessian="diagonal", at="newton"),
    "exact@newton": dict(hessian="exact", at="newton"),
    "mean_diagonal@newton": dict(),                       # the default
    "mean_diagonal_p1@newton": dict(hessian="mean_diagonal", power=1.0),
    "mean@newton": dict(hessian="mean"),
    "mean_p1@newton": dict(hessian="mean", power=1.0),
    "mean_diagonal@newton2": dict(newton_steps=2),
    "mean_diagonal@pilot": dict(at="pilot"),
    "mean_diagonal@optimum": "optimum",
}


def raw_set(name: str):
    """(X, y in {-1, +1}) before splitting; ``name`` without the _raw / _std suffix."""
    from sklearn import datasets

    if name == "breast_cancer":
        bunch = datasets.load_breast_cancer()
        return bunch.data, 2.0 * bunch.target - 1
    if name.startswith("digits_"):
        bunch = datasets.load_digits()
        return bunch.data, np.where(bunch.target == int(name[-1]), 1.0, -1.0)
    if name == "wine":
        bunch = datasets.load_wine()
        return bunch.data, np.where(bunch.target == 1, 1.0, -1.0)
    if name == "iris":
        bunch = datasets.load_iris()
        return bunch.data, np.where(bunch.target == 1, 1.0, -1.0)
    if name == "diabetes":
        bunch = datasets.load_diabetes()
        return bunch.data, np.where(bunch.target > np.median(bunch.target), 1.0, -1.0)
    X, labels = datasets.make_classification(n_samples=3000, n_features=20, n_informative=8,
                                             n_redundant=4, flip_y=0.05, random_state=0)
    if name == "synthetic_scaled":
        X = X * 10.0 ** np.random.default_rng(0).uniform(-3, 3, X.shape[1])
    return X, 2.0 * labels - 1


def load_split(name: str, split: int):
    from sklearn.model_selection import train_test_split

    standardize = not name.endswith("_raw")
    base = name.removesuffix("_raw").removesuffix("_std")
    X, y = raw_set(base)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, stratify=y,
                                                        random_state=split)
    if standardize:
        mean, std = X_train.mean(axis=0), X_train.std(axis=0)
        std[std == 0] = 1.0
        X_train, X_test = (X_train - mean) / std, (X_test - mean) / std
    return X_train, X_test, y_train, y_test


def fit(X, y, weights, alpha: float) -> np.ndarray:
    """Weighted L2 logistic regression through scikit-learn, our objective exactly."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0 / (alpha * weights.sum()), solver="newton-cholesky",
                               tol=1e-10, max_iter=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # newton-cholesky's tiny-step notes on 2 rows
        model.fit(X, y, sample_weight=weights)
    return np.append(model.coef_[0], model.intercept_[0])


def relative_eps_coreset(X, y, fraction, alpha, eps=1e-4):
    """Study-only variant: u_i = g_i / (h_i + hbar) at w = 0 (damping relative to the
    averaged curvature), on the library's exact per-class facility location."""
    loss = get_loss("logistic", alpha=alpha)
    w = np.zeros(X.shape[1] + 1)
    grads = loss.per_example_grads(w, X, y)
    diags = loss.per_example_hessian_diag(w, X, y)
    vectors = torch.from_numpy((grads / (diags + diags.mean(axis=0) + eps)).astype(np.float32))
    labels = y.astype(np.int64)
    budgets = per_class_budgets(labels, budget_from_fraction(fraction, len(y)), "proportional")
    coreset = per_class_facility_location(vectors, labels, budgets)
    return coreset.indices, coreset.weights.astype(float), 0.0


def run(sets, splits: int, random_seeds: int, alpha: float, methods) -> list[dict]:
    loss = get_loss("logistic", alpha=alpha)
    rows = []
    for name in sets:
        began = time.perf_counter()
        for split in range(splits):
            X, X_test, y, y_test = load_split(name, split)
            n = len(y)
            w_full = fit(X, y, np.ones(n), alpha)
            w_star, polished = reference_solution(loss, X, y, w0=w_full)
            optimum = min(polished, loss.value(w_full, X, y))
            test_rows = np.c_[X_test, np.ones(len(X_test))]

            def score(indices, weights):
                w = fit(X[indices], y[indices], weights, alpha)
                accuracy = float(np.mean(np.where(test_rows @ w >= 0, 1.0, -1.0) == y_test))
                return (loss.value(w, X, y) - optimum) / optimum, accuracy

            for fraction in FRACTIONS:
                scores = []
                for seed in range(random_seeds):
                    c = select_coreset(X, y, fraction=fraction, method="random", seed=seed)
                    scores.append(score(c.indices, c.weights.astype(float)))
                rows.append(dict(set=name, split=split, method="random", fraction=fraction,
                                 residual=float(np.median([s[0] for s in scores])),
                                 accuracy=float(np.median([s[1] for s in scores])),
                                 seconds=0.0))
                for method in methods:
                    options = METHODS[method]
                    if options is None:
                        indices, weights, seconds = relative_eps_coreset(X, y, fraction, alpha)
                    else:
                        if options == "optimum":
                            options = dict(at="initial", w=w_star)
                        c = select_coreset(X, y, fraction=fraction, alpha=alpha, seed=split,
                                           **options)
                        indices, weights = c.indices, c.weights.astype(float)
                        seconds = c.metadata["select_seconds"]
                    residual, accuracy = score(indices, weights)
                    rows.append(dict(set=name, split=split, method=method, fraction=fraction,
                                     residual=float(residual), accuracy=accuracy,
                                     seconds=float(seconds)))
        print(f"{name}: {time.perf_counter() - began:.1f} s", flush=True)
    return rows


def diagnose(sets, alpha: float, eps: float = 1e-4) -> str:
    """Why the per-example diagonal at w = 0 fails, and what the Newton point changes.

    Split 0 of each set: for u = g / (h_i + eps) at w = 0, the share of sum ||u_i||^2 that
    comes from entries with |x_ik| < 0.25 (and the share of such entries), the Spearman
    correlation of pairwise distances in u-space with those in x-space (CRAIG's at
    w = 0); the spread of phi'' (the per-example curvature) at w = 0, at the Newton point
    and at w*; the Newton point's residual and cosine with w*; the Spearman correlation
    of |phi'| at the Newton point with |phi'| at w*.
    """
    from scipy.stats import spearmanr

    from adacore.convex import convex_vectors, newton_point

    loss = get_loss("logistic", alpha=alpha)
    lines = ["| set | small entries | their share of sum u^2 | corr(dist u, dist x) | "
             "phi'' at 0 (min-max) | phi'' at Newton (10-90%) | phi'' at w* (10-90%) | "
             "Newton residual | cos(w_N, w*) | corr(abs phi' N, w*) |",
             "| --- |" + " ---: |" * 9]
    for name in sets:
        X, _, y, _ = load_split(name, 0)
        w_star, optimum = reference_solution(loss, X, y, w0=fit(X, y, np.ones(len(y)), alpha))
        u = convex_vectors(X, y, alpha=alpha, eps=eps, hessian="diagonal")[:, :-1]
        small = np.abs(X) < 0.25
        share = float((u[small] ** 2).sum() / (u ** 2).sum())
        rng = np.random.default_rng(0)
        pairs = rng.integers(0, len(y), size=(4000, 2))
        same = y[pairs[:, 0]] == y[pairs[:, 1]]        # distances within a class
        pairs = pairs[same]
        du = np.linalg.norm(u[pairs[:, 0]] - u[pairs[:, 1]], axis=1)
        dx = np.linalg.norm(X[pairs[:, 0]] - X[pairs[:, 1]], axis=1)
        w_newton, _ = newton_point(loss, X, y, np.zeros(X.shape[1] + 1), eps=eps)

        def curvature(w):
            _, first, second = loss.derivatives(loss._scores(w, X), y)
            return first, second

        first_n, second_n = curvature(w_newton)
        first_s, second_s = curvature(w_star)
        residual = (loss.value(w_newton, X, y) - optimum) / optimum
        cosine = float(w_newton[:-1] @ w_star[:-1]
                       / np.linalg.norm(w_newton[:-1]) / np.linalg.norm(w_star[:-1]))
        q = np.quantile
        lines.append(
            f"| {name} | {small.mean():.0%} | {share:.0%} | {spearmanr(du, dx)[0]:.2f} | "
            f"0.25-0.25 | {q(second_n, 0.1):.3f}-{q(second_n, 0.9):.3f} | "
            f"{q(second_s, 0.1):.3f}-{q(second_s, 0.9):.3f} | {residual:.3g} | {cosine:.2f} | "
            f"{spearmanr(np.abs(first_n), np.abs(first_s))[0]:.2f} |")
    return "\n".join(lines) + "\n"


LARGE = (  # (data set, scale of its rows, exact_limit, alpha): the larger-n checks
    ("make_classification_1000", 1.0, 10 ** 6, 1e-3),
    ("make_classification_3000", 1.0, 10 ** 6, 1e-3),
    ("make_classification_10000", 1.0, 10 ** 6, 1e-3),
    ("covtype_synthetic", 0.005, 12000, 1e-5),
    ("covtype_synthetic", 0.05, 12000, 1e-5),
    ("covtype_synthetic", 0.05, 4096, 1e-5),
    ("ijcnn1_synthetic", 0.1, 4096, 1e-5),
    ("ijcnn1_synthetic", 0.25, 10000, 1e-5),
    ("ijcnn1_synthetic", 1.0, 4096, 1e-5),
)
LARGE_METHODS = {"default": {}, "diagonal@initial": dict(at="initial", hessian="diagonal"),
                 "craig@initial": dict(method="craig", at="initial"),
                 "mean@newton": dict(hessian="mean")}


def large(configs=LARGE, seeds: int = 5) -> str:
    """Residuals on larger sets, one split each (the library's 80/20 split of
    :func:`adacore.convex.load_convex_data`; make_classification as in :func:`raw_set`,
    standardised, n rows, all for training): the default against random (median of
    ``seeds``), the old default and CRAIG at w = 0; classes above ``exact_limit`` go
    through the block engine (blocks of 32)."""
    from sklearn.datasets import make_classification

    from adacore.convex import load_convex_data

    lines = ["| set | n train | engine | fraction | random | " + " | ".join(LARGE_METHODS)
             + " | misclassified share data / default coreset |",
             "| --- |" + " ---: |" * (5 + len(LARGE_METHODS))]
    for name, scale, exact_limit, alpha in configs:
        if name.startswith("make_classification"):
            n = int(name.rsplit("_", 1)[1])
            X, labels = make_classification(n_samples=n, n_features=20, n_informative=8,
                                            n_redundant=4, flip_y=0.05, random_state=0)
            X, y = (X - X.mean(axis=0)) / X.std(axis=0), 2.0 * labels - 1
        else:
            data = load_convex_data(name, scale=scale)
            X, y = data.X_train, data.y_train
        loss = get_loss("logistic", alpha=alpha)
        _, optimum = reference_solution(loss, X, y, w0=fit(X, y, np.ones(len(y)), alpha))

        def residual(c):
            w = fit(X[c.indices], y[c.indices], c.weights.astype(float), alpha)
            return (loss.value(w, X, y) - optimum) / optimum

        for fraction in (0.01, 0.05, 0.1, 0.3):
            random = np.median([residual(select_coreset(X, y, fraction=fraction,
                                                        method="random", seed=seed))
                                for seed in range(seeds)])
            cells, share = [], None
            for options in LARGE_METHODS.values():
                c = select_coreset(X, y, fraction=fraction, alpha=alpha,
                                   exact_limit=exact_limit, **options)
                cells.append(f"{residual(c):.3g}")
                share = share or c.metadata["misclassified_share"]
            engine = "blocks" if "blocks" in c.metadata["engines"].values() else "exact"
            lines.append(f"| {name} x{scale:g} | {len(y)} | {engine} | {100 * fraction:g}% | "
                         f"{random:.3g} | " + " | ".join(cells)
                         + f" | {share['data']:.3f} / {share['coreset']:.3f} |")
            print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def report(rows: list[dict]) -> str:
    """Markdown: per set, the median residual and the median ratio to random; overall."""
    sets = list(dict.fromkeys(r["set"] for r in rows))
    methods = ["random"] + [m for m in METHODS if any(r["method"] == m for r in rows)]
    key = {(r["set"], r["split"], r["method"], r["fraction"]): r for r in rows}
    splits = sorted({r["split"] for r in rows})

    def cells(name, method, fraction, field="residual"):
        values, ratios = [], []
        for split in splits:
            row = key.get((name, split, method, fraction))
            if row is None:
                continue
            values.append(row[field])
            ratios.append(row["residual"] / key[(name, split, "random", fraction)]["residual"])
        return values, ratios

    head = " | ".join(f"{100 * f:g}%" for f in FRACTIONS)
    lines = []
    for name in sets:
        lines += [f"### {name}", "",
                  f"| method | residual {head} | ratio to random {head} | accuracy {head} |",
                  "| --- |" + " ---: |" * (3 * len(FRACTIONS)) ]
        for method in methods:
            residuals, ratios, accuracies = [], [], []
            for fraction in FRACTIONS:
                values, ratio = cells(name, method, fraction)
                residuals.append(f"{np.median(values):.3g}")
                ratios.append(f"{np.median(ratio):.2f}")
                accuracy = np.median(cells(name, method, fraction, "accuracy")[0])
                accuracies.append(f"{100 * accuracy:.1f}")
            lines.append(f"| {method} | " + " | ".join(residuals + ratios + accuracies) + " |")
        lines.append("")
    sets = [name for name in sets if name not in DUPLICATES]
    lines += ["### over sets: geometric mean of the per-set median ratio to random "
              "(wins: (set, split) pairs below the random median, of all; "
              f"without {', '.join(DUPLICATES)})", "",
              f"| method | {head} | wins {head} |", "| --- |" + " ---: |" * (2 * len(FRACTIONS))]
    for method in methods:
        means, wins = [], []
        for fraction in FRACTIONS:
            per_set, won, total = [], 0, 0
            for name in sets:
                _, ratio = cells(name, method, fraction)
                per_set.append(np.median(ratio))
                won += sum(r < 1 for r in ratio)
                total += len(ratio)
            means.append(f"{np.exp(np.mean(np.log(per_set))):.2f}")
            wins.append(f"{won}/{total}")
        lines.append(f"| {method} | " + " | ".join(means + wins) + " |")
    lines += ["", "### over sets: test accuracy, mean over sets of the median over splits, "
              "and its difference from random's (points)", "",
              f"| method | {head} | vs random {head} |",
              "| --- |" + " ---: |" * (2 * len(FRACTIONS))]
    for method in methods:
        levels, gaps = [], []
        for fraction in FRACTIONS:
            mine = [np.median(cells(name, method, fraction, "accuracy")[0]) for name in sets]
            base = [np.median(cells(name, "random", fraction, "accuracy")[0]) for name in sets]
            levels.append(f"{100 * np.mean(mine):.1f}")
            gaps.append(f"{100 * (np.mean(mine) - np.mean(base)):+.1f}")
        lines.append(f"| {method} | " + " | ".join(levels + gaps) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alpha", type=float, default=1e-3)
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--random-seeds", type=int, default=7)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", default="convex_study.json")
    parser.add_argument("--report", nargs="*", help="print the tables of these JSON files")
    parser.add_argument("--diagnose", action="store_true",
                        help="print the diagnosis table (split 0 of every set) and stop")
    parser.add_argument("--large", action="store_true",
                        help="print the larger-set table (LARGE) and stop")
    args = parser.parse_args(argv)
    if args.large:
        torch.set_num_threads(1)
        print(large())
        return 0
    if args.diagnose:
        print(diagnose(args.sets.split(","), args.alpha))
        return 0
    if args.report:
        keep = set(args.methods.split(",")) | {"random"}
        rows = [row for path in args.report for row in json.load(open(path))["rows"]
                if row["method"] in keep]
        print(report(rows))
        return 0
    torch.set_num_threads(1)
    rows = run(args.sets.split(","), args.splits, args.random_seeds, args.alpha,
               args.methods.split(","))
    with open(args.out, "w") as handle:
        json.dump({"alpha": args.alpha, "splits": args.splits,
                   "random_seeds": args.random_seeds, "rows": rows}, handle)
    print(report(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
