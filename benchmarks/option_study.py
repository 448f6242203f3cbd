"""Options of one method against each other on validation accuracy (issue 11).

Each *variant* is a method with settings (TrainConfig fields, ``strategy_options``);
every variant trains with the same seeds on one scenario (TOML). The table gives per
variant: validation accuracy at its best epoch and test accuracy there (mean ± std over
seeds: choose on the first), the share of the training set ever selected, and from the
per-round metrics the overlap with the previous round's coreset and, for AdaCore, the
share of picks CRAIG also makes on the same probe and the median of
(Hbar + eps) / (|d_t| + eps) (1: the current curvature is used as it is).

    python benchmarks/option_study.py --preset smoothing \
        --config experiments/mnist_1pct.toml --seeds 0,1,2 --out runs/study/smoothing

Presets: smoothing (AdaCore's curvature smoothing), pool (the exact greedy against the
pool engine), max_weight (capped weights), refine_to (the refinement's step), baselines (GLISTER's and
GradMatch's modes, as their authors ran them or not), budgets (proportional against
equal per-class budgets, for class-imbalanced scenarios). Finished runs in --out are
read back, so a study can be stopped and continued.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from adacore.data import load_dataset
from adacore.experiments.runner import (COMPARE_KEYS, make_config, method_settings,
                                        read_scenario, run_one)

# the old behaviour: beta2 = 0.999 applied once per round (set per step below)
OLD_PER_ROUND = "per-round 0.999 (old)"

PRESETS = {
    "smoothing": {
        "fresh": {"method": "adacore", "beta2": 0.0},
        "rms 0.99/step": {"method": "adacore", "beta2": 0.99, "curvature_average": "rms"},
        "rms 0.999/step": {"method": "adacore", "beta2": 0.999, "curvature_average": "rms"},
        "mean 0.99/step": {"method": "adacore", "beta2": 0.99, "curvature_average": "mean"},
        "geometric 0.99/step": {"method": "adacore", "beta2": 0.99,
                                "curvature_average": "geometric"},
        "geometric 0.999/step": {"method": "adacore", "beta2": 0.999,
                                 "curvature_average": "geometric"},
        OLD_PER_ROUND: {"method": "adacore", "curvature_average": "rms"},
        "fresh eps 1e-2": {"method": "adacore", "beta2": 0.0, "eps": 1e-2},
        "fresh eps 1e-1": {"method": "adacore", "beta2": 0.0, "eps": 1e-1},
        "geometric 0.99/step eps 1e-2": {"method": "adacore", "beta2": 0.99, "eps": 1e-2,
                                         "curvature_average": "geometric"},
        "geometric 0.999/step eps 1e-2": {"method": "adacore", "beta2": 0.999, "eps": 1e-2,
                                          "curvature_average": "geometric"},
        "rms 0.999/step eps 1e-2": {"method": "adacore", "beta2": 0.999, "eps": 1e-2,
                                    "curvature_average": "rms"},
        "craig (reference)": {"method": "craig"},
    },
    "baselines": {
        "glister per class, taylor, last layer": {"method": "glister"},
        "glister per class, exact, logits": {
            "method": "glister", "strategy_options": {"update": "exact"}},
        "glister global, stochastic, exact, logits (CORDS)": {
            "method": "glister", "strategy_options": {
                "per_class": False, "greedy": "stochastic", "update": "exact"}},
        "gradmatch per class, whole vectors": {"method": "gradmatch"},
        "gradmatch per class, per gradient (CORDS)": {
            "method": "gradmatch", "strategy_options": {"per_gradient": True}},
    },
    # the selection engine: exact greedy over every example against a D^2-sampled pool,
    # refined by Voronoi iterations (the default, 2) or not
    "pool": {"adacore, every example": {"method": "adacore"},
             "adacore, pool 8": {"method": "adacore", "pool": 8.0},
             "adacore, pool 8, refine 0": {"method": "adacore", "pool": 8.0, "refine": 0},
             "adacore, pool 4": {"method": "adacore", "pool": 4.0},
             "adacore, pool 4, refine 1": {"method": "adacore", "pool": 4.0, "refine": 1},
             "craig, every example": {"method": "craig"},
             "craig, pool 8": {"method": "craig", "pool": 8.0},
             "craig, pool 8, refine 0": {"method": "craig", "pool": 8.0, "refine": 0},
             "craig, pool 4": {"method": "craig", "pool": 4.0}},
    # cluster weights capped at 10 times the mean (max_weight), on the engines whose
    # uncapped runs collapsed (the "pool" preset) and on the exact greedy
    "max_weight": {
        "craig exact, cap 10": {"method": "craig", "max_weight": 10.0},
        "craig pool 8, cap 10": {"method": "craig", "pool": 8.0, "max_weight": 10.0},
        "craig pool 8 refine 0, cap 10": {"method": "craig", "pool": 8.0, "refine": 0,
                                          "max_weight": 10.0},
        "adacore exact, cap 10": {"method": "adacore", "max_weight": 10.0},
        "adacore pool 4 refine 0, cap 10": {"method": "adacore", "pool": 4.0, "refine": 0,
                                            "max_weight": 10.0},
    },
    # the refinement's step: picks moved to their clusters' medoids (the default) or to
    # the member nearest each cluster's mean, each named explicitly; the exact greedy
    # and the pool with its weights capped at 10 times the mean beside them
    "refine_to": {
        **{f"{method}, pool {pool:g}{', refine 1' if refine == 1 else ''}, to {to}":
           {"method": method, "pool": pool, "refine_to": to,
            **({"refine": refine} if refine != 2 else {})}
           for method in ("adacore", "craig") for pool in (4.0, 8.0)
           for refine in (2, 1) for to in ("medoid", "mean")
           if refine == 2 or (pool == 4.0 and method == "adacore")},
        **{f"{method}, every example": {"method": method} for method in ("adacore", "craig")},
        **{f"{method}, pool 4, to mean, cap 10": {"method": method, "pool": 4.0,
                                                  "refine_to": "mean", "max_weight": 10.0}
           for method in ("adacore", "craig")},
    },
    # each method with its defaults (AdaCore's smoothing included) and either split
    "budgets": {f"{method} {budget}": {"method": method, "budget": budget}
                for method in ("adacore", "craig", "gradmatch", "glister", "random")
                for budget in ("proportional", "equal")},
}


def _mean_std(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values, ddof=1):.1f}"


def _config(scenario: dict, settings: dict, seed: int):
    """The run's TrainConfig: the scenario's shared settings, then its ``per_method`` ones
    for the variant's method (as ``adacore compare`` runs it), then the variant's."""
    shared = {key: value for key, value in scenario.items() if key not in COMPARE_KEYS}
    base = method_settings(shared, scenario.get("per_method"), settings.get("method", ""))
    diagnostics = {"diagnostics": True} if settings.get("method") == "adacore" else {}
    merged = method_settings({**base, **diagnostics}, {"variant": settings}, "variant")
    config = make_config({**merged, "seed": seed})
    if settings is PRESETS["smoothing"][OLD_PER_ROUND]:
        # the old constant per round, as a per-step one over this scenario's round
        splits = load_dataset(config.dataset, root=config.data_root,
                              imbalance_ratio=config.imbalance_ratio, seed=seed)
        k = max(round(config.fraction * len(splits.train.y)), 1)
        steps_per_round = -(-k // config.batch_size) * config.select_every
        config.beta2 = 0.999 ** (1 / steps_per_round)
    return config


def study(scenario: dict, variants: dict, seeds: list[int], out: Path) -> list[dict]:
    rows = []
    for name, settings in variants.items():
        records = []
        for seed in seeds:
            folder = out / name.replace(" ", "_").replace("/", "-") / f"seed_{seed}"
            if (folder / "run.json").exists():
                record = json.loads((folder / "run.json").read_text())
            else:
                record = run_one(_config(scenario, settings, seed), folder, quiet=True,
                                 resume=True)
            records.append(record)
            print(f"{name} seed {seed}: val {record['best_val_accuracy']:.4f} test "
                  f"{record['test_accuracy_at_best_val']:.4f}", file=sys.stderr, flush=True)
        later = [row for r in records for row in r["history"]
                 if row.get("overlap_with_previous") is not None]
        ratios = [row["curvature_ratio_median"] for row in later
                  if row.get("curvature_ratio_median") is not None]
        rows.append({
            "variant": name, "settings": settings,
            "val": _mean_std([r["best_val_accuracy"] for r in records]),
            "test": _mean_std([r["test_accuracy_at_best_val"] for r in records]),
            "visited": _mean_std([r["fraction_visited"] for r in records]),
            "overlap_prev": _mean_std([row["overlap_with_previous"] for row in later]),
            "craig_overlap": _mean_std([row.get("craig_overlap") for row in later]),
            "ratio": f"{np.median(ratios):.3g}" if ratios else "-",
            "val_by_seed": [r["best_val_accuracy"] for r in records],
            "test_by_seed": [r["test_accuracy_at_best_val"] for r in records],
        })
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| variant | val acc. (best) | test acc. at best val | visited | overlap with "
             "previous round | share of CRAIG's picks | median (Hbar+eps)/(abs(d)+eps) |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['variant']} | {row['val']} | {row['test']} | {row['visited']} "
                     f"| {row['overlap_prev']} | {row['craig_overlap']} | {row['ratio']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", required=True, choices=sorted(PRESETS))
    parser.add_argument("--config", required=True, help="TOML scenario (experiments/)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", help="semicolon-separated subset of the preset's names")
    parser.add_argument("--select-every", type=int, help="override the scenario's R")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    scenario = read_scenario(args.config)
    if args.select_every:
        scenario["select_every"] = args.select_every
    variants = PRESETS[args.preset]
    if args.variants:
        variants = {name: variants[name] for name in args.variants.split(";")}
    out = Path(args.out)
    rows = study(scenario, variants, [int(s) for s in args.seeds.split(",")], out)
    text = markdown(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.md").write_text(text)
    (out / "study.json").write_text(json.dumps(rows, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
