"""Result summaries, speedups, tables, atomic writers and plots, against hand-computed values."""

import copy
import json
import math
import os

import matplotlib.image
import numpy as np
import pytest

from adacore.experiments import (accuracy_figure, gradient_error_figure, markdown_table,
                                 plot_curves, plot_gradient_error, read_json,
                                 speedup_to_target, summarize, write_json, write_markdown,
                                 write_report)
from adacore.experiments.summary import paired_accuracy
from adacore.experiments.statistics import paired_comparison, paired_differences, paired_test
from adacore.validation import InputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# t(0.975) on 2 degrees of freedom, in closed form: the t_2 quantile of q is
# (2q - 1) / sqrt(2 q (1 - q)) (the CDF is 1/2 + t / (2 sqrt(2 + t^2)))
T_975_DF2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)


def make_run(method, seed, *, val, test, wall, examples, grad, fraction, visited, select,
             train, best_val_epoch, eval_seconds=1.0):
    """A run record as the trainer writes it; the best epoch is given, not computed."""
    history = [{"epoch": epoch, "train_loss": 1.0 / epoch, "val_accuracy": v,
                "val_loss": 0.5, "test_accuracy": t, "test_loss": 0.5,
                "select_seconds": select / len(val), "train_seconds": train / len(val),
                "eval_seconds": eval_seconds / len(val), "examples_processed": x,
                "wall_seconds": w, "fraction_visited": visited, "gradient_error": g,
                "coreset_size": 10}
               for epoch, (v, t, w, x, g) in enumerate(zip(val, test, wall, examples, grad),
                                                       start=1)]
    return {"method": method, "seed": seed, "fraction": fraction, "dataset": "mnist",
            "model": "mlp", "final_test_accuracy": test[-1], "final_test_loss": 0.5,
            "best_val_epoch": best_val_epoch, "best_val_accuracy": val[best_val_epoch - 1],
            "test_accuracy_at_best_val": test[best_val_epoch - 1],
            "select_seconds": select, "train_seconds": train, "eval_seconds": eval_seconds,
            "fraction_visited": visited, "history": history}


# Three epochs per run. In adacore seed 0 and random seed 1 the best test epoch (3) is
# not the best validation epoch (2); adacore seed 2 ties on validation (epochs 2 and 3).
ADACORE = [
    make_run("adacore", 0, val=[0.80, 0.92, 0.91], test=[0.81, 0.93, 0.95],
             wall=[0.5, 1.0, 1.5], examples=[10, 20, 30], grad=[0.30, None, 0.20],
             fraction=0.01, visited=0.70, select=10.0, train=8.0, best_val_epoch=2),
    make_run("adacore", 1, val=[0.85, 0.90, 0.93], test=[0.84, 0.91, 0.94],
             wall=[0.6, 1.2, 1.8], examples=[10, 20, 30], grad=[0.40, None, 0.30],
             fraction=0.01, visited=0.74, select=12.0, train=8.0, best_val_epoch=3),
    make_run("adacore", 2, val=[0.88, 0.94, 0.94], test=[0.87, 0.95, 0.96],
             wall=[0.4, 0.8, 1.2], examples=[10, 20, 30], grad=[0.20, None, 0.10],
             fraction=0.01, visited=0.78, select=14.0, train=8.0, best_val_epoch=2),
]
RANDOM = [
    make_run("random", 0, val=[0.70, 0.80, 0.85], test=[0.71, 0.82, 0.86],
             wall=[0.1, 0.2, 0.3], examples=[10, 20, 30], grad=[None] * 3,
             fraction=0.01, visited=0.87, select=0.1, train=8.0, best_val_epoch=3),
    make_run("random", 1, val=[0.75, 0.84, 0.83], test=[0.74, 0.83, 0.88],
             wall=[0.1, 0.2, 0.3], examples=[10, 20, 30], grad=[None] * 3,
             fraction=0.01, visited=0.87, select=0.1, train=9.0, best_val_epoch=2),
    make_run("random", 2, val=[0.72, 0.81, 0.86], test=[0.73, 0.80, 0.86],
             wall=[0.1, 0.2, 0.3], examples=[10, 20, 30], grad=[None] * 3,
             fraction=0.01, visited=0.87, select=0.1, train=10.0, best_val_epoch=3),
]
FULL = [
    make_run("full", 0, val=[0.91, 0.95, 0.97], test=[0.92, 0.96, 0.97],
             wall=[2.0, 4.0, 6.0], examples=[1000, 2000, 3000], grad=[None] * 3,
             fraction=1.0, visited=1.0, select=0.0, train=6.0, best_val_epoch=3),
    make_run("full", 1, val=[0.89, 0.93, 0.96], test=[0.90, 0.94, 0.97],
             wall=[1.5, 3.0, 4.5], examples=[1000, 2000, 3000], grad=[None] * 3,
             fraction=1.0, visited=1.0, select=0.0, train=4.5, best_val_epoch=3),
    make_run("full", 2, val=[0.90, 0.94, 0.97], test=[0.91, 0.95, 0.98],
             wall=[2.5, 5.0, 7.5], examples=[1000, 2000, 3000], grad=[None] * 3,
             fraction=1.0, visited=1.0, select=0.0, train=7.5, best_val_epoch=3),
]


def runs_two_methods():
    return copy.deepcopy(ADACORE + RANDOM)


def runs_three_methods():
    return copy.deepcopy(ADACORE + RANDOM + FULL)


# --------------------------------------------------------------------------- summarize

def test_summary_means_and_stds_by_hand():
    adacore, random = summarize(runs_two_methods())
    assert (adacore["method"], random["method"]) == ("adacore", "random")
    assert adacore["n_seeds"] == random["n_seeds"] == 3
    assert adacore["seeds"] == [0, 1, 2]
    assert adacore["fraction"] == 0.01
    # adacore headline 0.93, 0.94, 0.95 (best-val epochs 2, 3, 2): mean 0.94, std 0.01.
    assert adacore["test_accuracy_at_best_val"]["mean"] == pytest.approx(0.94)
    assert adacore["test_accuracy_at_best_val"]["std"] == pytest.approx(0.01)
    # final 0.95, 0.94, 0.96; visited 0.70, 0.74, 0.78; selection 10, 12, 14 s; training 8 s.
    assert adacore["final_test_accuracy"]["mean"] == pytest.approx(0.95)
    assert adacore["final_test_accuracy"]["std"] == pytest.approx(0.01)
    assert adacore["fraction_visited"]["mean"] == pytest.approx(0.74)
    assert adacore["fraction_visited"]["std"] == pytest.approx(0.04)
    assert adacore["select_seconds"] == pytest.approx({"mean": 12.0, "std": 2.0})
    assert adacore["train_seconds"] == pytest.approx({"mean": 8.0, "std": 0.0})
    assert adacore["total_seconds"] == pytest.approx({"mean": 20.0, "std": 2.0})
    assert adacore["eval_seconds"] == pytest.approx({"mean": 1.0, "std": 0.0})
    # random headline 0.86, 0.83, 0.86: deviations 0.01, -0.02, 0.01, sum of squares
    # 6e-4 over ddof 2 -> std sqrt(3e-4). Final 0.86, 0.88, 0.86 -> std 0.02 / sqrt(3).
    assert random["test_accuracy_at_best_val"]["mean"] == pytest.approx(0.85)
    assert random["test_accuracy_at_best_val"]["std"] == pytest.approx(math.sqrt(3e-4))
    assert random["final_test_accuracy"]["mean"] == pytest.approx(2.6 / 3)
    assert random["final_test_accuracy"]["std"] == pytest.approx(0.02 / math.sqrt(3))
    assert random["train_seconds"] == pytest.approx({"mean": 9.0, "std": 1.0})
    assert random["total_seconds"] == pytest.approx({"mean": 9.1, "std": 1.0})


def test_single_seed_has_zero_std():
    (entry,) = summarize(copy.deepcopy(ADACORE[:1]))
    assert entry["n_seeds"] == 1
    assert entry["test_accuracy_at_best_val"] == {"mean": 0.93, "std": 0.0}


def test_headline_is_test_accuracy_at_best_validation_epoch():
    # adacore seed 0: best test 0.95 at epoch 3, best validation at epoch 2 (test 0.93).
    (entry,) = summarize(copy.deepcopy(ADACORE[:1]))
    assert entry["test_accuracy_at_best_val"]["mean"] == pytest.approx(0.93)
    assert entry["final_test_accuracy"]["mean"] == pytest.approx(0.95)


def test_epoch_chosen_by_test_accuracy_is_rejected():
    run = copy.deepcopy(ADACORE[0])
    run["best_val_epoch"], run["test_accuracy_at_best_val"] = 3, 0.95  # the best *test* epoch
    with pytest.raises(InputError, match="best_val_epoch.*epoch of best validation accuracy"):
        summarize([run])
    run = copy.deepcopy(ADACORE[0])
    run["test_accuracy_at_best_val"] = 0.95  # right epoch, wrong (best-test) number
    with pytest.raises(InputError, match="test_accuracy_at_best_val.*0.93"):
        summarize([run])


def test_tie_on_validation_accepts_either_epoch():
    run = copy.deepcopy(ADACORE[2])  # validation ties at epochs 2 and 3
    run["best_val_epoch"], run["test_accuracy_at_best_val"] = 3, 0.96
    (entry,) = summarize([run])
    assert entry["test_accuracy_at_best_val"]["mean"] == pytest.approx(0.96)


def test_summary_without_history_uses_record():
    runs = runs_two_methods()
    for run in runs:
        del run["history"]
    assert summarize(runs)[0]["test_accuracy_at_best_val"]["mean"] == pytest.approx(0.94)


# --------------------------------------------------------------------------- speedup

def test_speedup_by_hand():
    # First epoch with validation accuracy >= 0.9: full 2.0, 3.0, 2.5 s (mean 2.5);
    # adacore 1.0, 1.2, 0.8 s (mean 1.0) -> 2.5x; random never.
    result = speedup_to_target(runs_three_methods(), target=0.9)
    assert list(result) == ["adacore", "random", "full"]
    assert result["full"]["seconds"] == pytest.approx(2.5)
    assert result["full"]["speedup"] == pytest.approx(1.0)
    assert result["adacore"]["seconds"] == pytest.approx(1.0)
    assert result["adacore"]["seconds_std"] == pytest.approx(0.2)
    assert result["adacore"]["speedup"] == pytest.approx(2.5)
    assert result["random"]["seconds"] is None and result["random"]["speedup"] is None
    assert result["random"]["seeds_reached"] == 0
    assert "never reached 90%" in result["random"]["note"]


def test_speedup_uses_validation_not_test_accuracy():
    # random seed 1 reaches 0.88 test accuracy but at most 0.86 validation accuracy;
    # adacore reaches 0.87 validation accuracy at epochs 2, 2, 1 (1.0, 1.2, 0.4 s).
    result = speedup_to_target(runs_three_methods(), target=0.87)
    assert result["random"]["speedup"] is None
    assert result["adacore"]["seconds"] == pytest.approx((1.0 + 1.2 + 0.4) / 3)


def test_speedup_partial_seeds_and_reference_not_reached():
    # Target 0.93: adacore seed 0 peaks at 0.92, so adacore (as reference) is not reached;
    # full reaches it at 4.0, 3.0, 5.0 s but has nothing to compare against.
    result = speedup_to_target(runs_three_methods(), target=0.93, reference="adacore")
    assert result["adacore"]["seconds"] is None
    assert result["adacore"]["seeds_reached"] == 2
    assert "2 of 3 seeds" in result["adacore"]["note"]
    assert result["full"]["seconds"] == pytest.approx(4.0)
    assert result["full"]["speedup"] is None
    assert "'adacore' did not reach" in result["full"]["note"]


def test_speedup_without_reference():
    result = speedup_to_target(runs_two_methods(), target=0.9)
    assert all(entry["speedup"] is None for entry in result.values())
    assert all("'full' is not among the runs" in entry["note"] for entry in result.values())
    assert result["adacore"]["seconds"] == pytest.approx(1.0)


@pytest.mark.parametrize("target, match", [(94, "fraction"), (0.0, r"\(0, 1\]"),
                                           (float("nan"), "target"), ("0.9", "target")])
def test_speedup_rejects_bad_target(target, match):
    with pytest.raises(InputError, match=match):
        speedup_to_target(runs_three_methods(), target=target)


# --------------------------------------------------------------------------- paired tests

def test_paired_test_by_hand_three_seeds():
    # differences 1, 2, 3: mean 2, s = 1, standard error 1 / sqrt(3), t = 2 sqrt(3) on 2 df
    result = paired_test([1.0, 2.0, 3.0])
    assert result["n"] == 3 and result["mean_diff"] == pytest.approx(2.0)
    assert result["std_diff"] == pytest.approx(1.0)
    half_width = T_975_DF2 / math.sqrt(3)                   # 4.3027 / sqrt(3) = 2.4841
    assert result["ci95"] == pytest.approx([2.0 - half_width, 2.0 + half_width])
    t = 2 * math.sqrt(3)
    assert result["t_statistic"] == pytest.approx(t)
    assert result["p_value"] == pytest.approx(1 - t / math.sqrt(2 + t * t))   # 0.0742
    # signed ranks all positive: P(W- = 0) = 1 / 2^3, two-sided 0.25
    assert result["p_value_wilcoxon"] == pytest.approx(0.25)
    assert result["note"] is None


def test_paired_test_by_hand_two_seeds():
    # differences 1, 3: mean 2, s = sqrt(2), standard error 1, t = 2 on 1 df (Cauchy):
    # p = 1 - (2 / pi) atan(2), t(0.975) = tan(0.475 pi) = 12.706
    result = paired_test([1.0, 3.0])
    assert result["ci95"] == pytest.approx([2 - math.tan(0.475 * math.pi),
                                            2 + math.tan(0.475 * math.pi)])
    assert result["p_value"] == pytest.approx(1 - 2 / math.pi * math.atan(2.0))
    assert result["p_value_wilcoxon"] == pytest.approx(0.5)


def test_wilcoxon_by_hand_with_mixed_signs():
    # |d| ranks 1, 2, 3, 4, the rank-2 difference negative: W- = 2; subsets of {1,2,3,4}
    # summing to <= 2: {}, {1}, {2}, so P(W- <= 2) = 3 / 16 and two-sided p = 6 / 16
    result = paired_test([1.0, -2.0, 3.0, 4.0])
    assert result["p_value_wilcoxon"] == pytest.approx(6 / 16)
    assert result["mean_diff"] == pytest.approx(1.5)


def test_paired_test_undefined_cases_say_why():
    # equal differences (as floats from accuracies: not bit-equal) have no spread
    equal = paired_test([0.93 - 0.88, 0.95 - 0.90, 0.91 - 0.86])
    assert equal["mean_diff"] == pytest.approx(0.05)
    assert equal["p_value"] is None and equal["ci95"] is None
    assert "same" in equal["note"]
    assert equal["p_value_wilcoxon"] == pytest.approx(0.25)
    zero = paired_test([0.0, 0.0, 0.0])
    assert zero["p_value"] is None and zero["p_value_wilcoxon"] is None
    assert "zero" in zero["note"]
    one = paired_test([0.02])
    assert one["mean_diff"] == pytest.approx(0.02) and one["p_value"] is None
    assert "1 seed" in one["note"]
    none = paired_test([])
    assert none["mean_diff"] is None and "0 seeds" in none["note"]


def test_paired_comparison_pairs_by_seed():
    values = {"adacore": {0: 0.9, 1: 0.8, 2: 0.7}, "craig": {1: 0.6, 2: 0.6, 3: 0.1},
              "random": {5: 0.5}}
    result = paired_comparison(values)
    assert list(result) == ["craig", "random"]
    assert result["craig"]["seeds"] == [1, 2] and result["craig"]["vs"] == "adacore"
    assert result["craig"]["mean_diff"] == pytest.approx(0.15)     # 0.2 and 0.1
    assert result["random"]["seeds"] == [] and result["random"]["p_value"] is None
    assert paired_comparison({"craig": {0: 0.5}}) == {}
    with pytest.raises(InputError, match=r"reference\[0\]"):
        paired_comparison({"adacore": {0: float("nan")}, "craig": {0: 0.5}})


def test_paired_accuracy_uses_the_best_validation_headline():
    runs = runs_three_methods()
    result = paired_accuracy(runs)
    # seed 0: adacore 0.93 (best-val epoch 2, not its best test 0.95), random 0.86
    seeds, differences = paired_differences({0: 0.93, 1: 0.94, 2: 0.95},
                                            {0: 0.86, 1: 0.83, 2: 0.86})
    assert result["random"]["mean_diff"] == pytest.approx(float(np.mean(differences)))
    assert result["random"]["seeds"] == seeds == [0, 1, 2]


# --------------------------------------------------------------------------- markdown

def test_markdown_table_cells():
    text = markdown_table(runs_three_methods(), target=0.9)
    lines = text.splitlines()
    assert lines[0] == ("Results on **mnist** with model **mlp**, fraction 1%, 3 seeds "
                        "(0, 1, 2; mean ± std over seeds).")
    assert ("| method | test acc. (best val) | final test acc. | visited | selection s | "
            "training s | speedup to 90% | AdaCore − method (95% CI, p) |") in lines
    assert "| adacore | 94.0 ± 1.0 (74%) | 95.0 ± 1.0 | 74.0 ± 4.0% | 12.0 ± 2.0 | " \
           "8.0 ± 0.0 | 2.5× | — |" in lines
    # AdaCore - random per seed: 7, 11, 9 points: mean 9, s 2, CI 9 -+ 4.303 * 2 / sqrt(3)
    # = [4.03, 13.97]; t = 7.79 on 2 df: p = 1 - t / sqrt(2 + t^2) = 0.016
    assert "| random | 85.0 ± 1.7 (87%) | 86.7 ± 1.2 | 87.0 ± 0.0% | 0.10 ± 0.00 | " \
           "9.0 ± 1.0 | not reached | +9.0 (+4.0 to +14.0, p = 0.016) |" in lines
    # AdaCore - full: -4, -3, -3 points: mean -3.33, s 0.577, t = -10: p = 0.0099,
    # CI -3.33 -+ 4.303 / 3 = [-4.77, -1.90]
    assert "| full | 97.3 ± 0.6 (100%) | 97.3 ± 0.6 | 100.0 ± 0.0% | 0.00 ± 0.00 | " \
           "6.0 ± 1.5 | 1.0× | −3.3 (−4.8 to −1.9, p = 0.0099) |" in lines
    assert "- random: never reached 90% validation accuracy." in lines
    assert any(line.startswith("Test accuracy") and "over 3 seeds" in line
               and "scipy.stats.ttest_rel" in line for line in lines)
    assert any(line.startswith("Wilcoxon") and "random p = 0.25, full p = 0.25" in line
               for line in lines)
    assert "Settings: not recorded (the runs carry no config)." in lines
    assert "Command: not recorded." in lines


def test_markdown_table_without_target_or_reference():
    lines = markdown_table(runs_two_methods()).splitlines()
    assert ("| method | test acc. (best val) | final test acc. | visited | selection s | "
            "training s | AdaCore − method (95% CI, p) |") in lines
    # (the time-to-accuracy table that follows has its own speedup, needing no target)
    main = lines[:next(i for i, line in enumerate(lines) if line.startswith("Time to acc"))]
    assert not any("speedup" in line.lower() for line in main)
    lines = markdown_table(runs_two_methods(), target=0.9).splitlines()
    assert any(line.startswith("| adacore |") and line.endswith("| n/a | — |")
               for line in lines)
    assert any("'full' is not among the runs" in line for line in lines)
    # without AdaCore there is nothing to pair
    lines = markdown_table(copy.deepcopy(RANDOM + FULL)).splitlines()
    assert not any("AdaCore − method" in line or "Wilcoxon" in line for line in lines)


def test_markdown_table_single_seed_prints_values_alone():
    text = markdown_table(copy.deepcopy([ADACORE[0], RANDOM[0]]))
    lines = text.splitlines()
    assert "± 0.0" not in text and "±" not in lines[2 + 2]
    assert "1 seed (0; single runs, no standard deviation)" in lines[0]
    assert "| adacore | 93.0 (70%) | 95.0 | 70.0% | 10.0 | 8.0 | — |" in lines
    assert "| random | 86.0 (87%) | 86.0 | 87.0% | 0.10 | 8.0 | +7.0 (1 seed, no test) |" \
        in lines
    assert any("single runs" in line for line in lines if line.startswith("Test accuracy"))
    assert "- random vs adacore: 1 seed in common: a paired test needs at least 2." in lines


def test_markdown_table_with_different_seed_counts_has_a_seeds_column():
    lines = markdown_table(copy.deepcopy(ADACORE + RANDOM[:1])).splitlines()
    assert "1–3 seeds per method" in lines[0]
    assert lines[2].startswith("| method | seeds | test acc. (best val) |")
    assert "| adacore | 0, 1, 2 | 94.0 ± 1.0 (74%) |" in lines[4]
    assert lines[5].startswith("| random | 0 | 86.0 (87%) | 86.0 | 87.0% |")


def with_config(runs, **changes):
    for run in runs:
        run["config"] = {"dataset": "mnist", "model": "mlp", "method": run["method"],
                         "seed": run["seed"], "fraction": run["fraction"], "epochs": 3,
                         "select_every": 5, "batch_size": 32, "lr": 0.1, "budget":
                         "proportional", "data_root": None, **changes.get(run["method"], {})}
    return runs


def test_markdown_table_states_settings_and_command():
    runs = with_config(runs_three_methods(), full={"select_every": 1})
    text = markdown_table(runs, command="adacore compare --config x.toml --out runs/x")
    lines = text.splitlines()
    assert ("Settings (every run): dataset `mnist`, model `mlp`, epochs `3`, batch_size "
            "`32`, lr `0.1`, budget `proportional`.") in lines
    # method and seed are the rows; data_root is None everywhere: left out
    assert "data_root" not in text and "method `" not in text
    assert ("Settings that differ: fraction: adacore `0.01`; random `0.01`; full `1.0`; "
            "select_every: adacore `5`; random `5`; full `1`.") in lines
    assert lines[-1] == "Command: `adacore compare --config x.toml --out runs/x`"
    with pytest.raises(InputError, match="command"):
        markdown_table(runs, command=["adacore", "compare"])


# --------------------------------------------------------------------------- atomic files

def leftovers(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


def test_json_round_trip_and_numpy_values(tmp_path):
    path = tmp_path / "results.json"
    obj = {"runs": [{"a": np.float32(0.5), "b": np.arange(3), "c": None}]}
    assert write_json(obj, path) == path
    assert read_json(path) == {"runs": [{"a": 0.5, "b": [0, 1, 2], "c": None}]}
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("bad", [{"x": object()}, {"x": float("nan")}, {"x": {1, 2}}])
def test_failed_json_write_keeps_old_file(tmp_path, bad):
    path = tmp_path / "results.json"
    write_json({"old": True}, path)
    before = path.read_bytes()
    with pytest.raises(InputError, match="obj: not JSON-serialisable"):
        write_json(bad, path)
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_read_json_errors(tmp_path):
    with pytest.raises(InputError, match="path: got .*missing.json.*existing JSON file"):
        read_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"runs": [1, 2,')
    with pytest.raises(InputError, match="not valid JSON.*line 1"):
        read_json(tmp_path / "bad.json")
    (tmp_path / "nan.json").write_text('{"x": NaN}')
    with pytest.raises(InputError, match="NaN"):
        read_json(tmp_path / "nan.json")
    with pytest.raises(InputError, match="not a folder"):
        read_json(tmp_path)


def test_write_markdown_is_atomic(tmp_path):
    path = tmp_path / "results.md"
    path.write_text("old table\n")
    bad = runs_two_methods()
    bad[0]["final_test_accuracy"] = float("nan")
    with pytest.raises(InputError):
        write_markdown(bad, path)
    assert path.read_text() == "old table\n"
    write_markdown(runs_two_methods(), path)
    assert path.read_text() == markdown_table(runs_two_methods())
    assert leftovers(tmp_path) == []


def test_writer_needs_existing_folder(tmp_path):
    with pytest.raises(InputError, match="existing folder"):
        write_json({}, tmp_path / "nope" / "results.json")


# --------------------------------------------------------------------------- plots

def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0
    assert float(image.std()) > 0  # something was drawn


@pytest.mark.parametrize("x, log_x", [("epoch", False), ("examples", True), ("seconds", True)])
def test_accuracy_figure_lines(x, log_x):
    runs = runs_three_methods()
    for entry, examples, wall in zip(runs[0]["history"], [16, 26, 36], [0.8, 1.3, 1.8]):
        entry["examples_processed"], entry["wall_seconds"] = examples, wall
    figure = accuracy_figure(runs, x=x)
    (axes,) = figure.axes
    assert len(axes.lines) == 3
    assert [line.get_label() for line in axes.lines] == ["adacore (n=3)", "random (n=3)",
                                                         "full (n=3)"]
    assert (axes.get_xscale() == "log") == log_x
    assert "(%)" in axes.get_ylabel() and axes.get_title()
    adacore = axes.lines[0]
    np.testing.assert_allclose(adacore.get_ydata(), [84.0, 93.0, 95.0])  # means over seeds
    # x per epoch: the mean over seeds (seed 0 now differs from the others).
    expected_x = {"epoch": [1, 2, 3], "examples": [12, 22, 32], "seconds": [0.6, 1.1, 1.6]}
    np.testing.assert_allclose(adacore.get_xdata(), expected_x[x])
    assert len(axes.collections) == 3  # one ±1 std band per method
    # adacore's band: test accuracies 81/84/87, 93/91/95, 95/94/96 have sample stds 3, 2, 1,
    # so it spans [81, 87], [91, 95] and [94, 96].
    band = np.concatenate([path.vertices for path in axes.collections[0].get_paths()])
    assert band[:, 1].min() == pytest.approx(81.0)
    assert band[:, 1].max() == pytest.approx(96.0)


def test_plot_curves_writes_pngs(tmp_path):
    out = tmp_path / "plots"
    paths = plot_curves(runs_three_methods(), out)
    assert [path.name for path in paths] == ["accuracy_vs_epoch.png",
                                             "accuracy_vs_examples.png",
                                             "accuracy_vs_seconds.png"]
    for path in paths:
        assert_png(path)
    assert leftovers(out) == []


def test_gradient_error_only_for_methods_with_selection(tmp_path):
    figure = gradient_error_figure(runs_three_methods())
    (axes,) = figure.axes
    assert [line.get_label() for line in axes.lines] == ["adacore (n=3)"]
    np.testing.assert_allclose(axes.lines[0].get_xdata(), [1, 3])
    np.testing.assert_allclose(axes.lines[0].get_ydata(), [0.3, 0.2])
    # the history's gradient_error is on the raw gradients g: the title must not name
    # AdaCore's preconditioned u
    assert "g_i" in axes.get_title() and "u_i" not in axes.get_title()
    assert "not preconditioned" in axes.get_title()
    path = plot_gradient_error(runs_three_methods(), tmp_path)
    assert path.name == "gradient_error.png"
    assert_png(path)
    assert plot_gradient_error(copy.deepcopy(RANDOM + FULL), tmp_path / "none") is None


def test_seeds_with_different_epochs_are_rejected():
    runs = runs_two_methods()
    runs[0]["history"][2]["epoch"] = 4  # seed 0's best epoch (2) stays in its history
    with pytest.raises(InputError, match=r"method 'adacore', seed 1 has epochs \[1, 2, 3\], "
                                         r"expected the same epochs as seed 0 \(\[1, 2, 4\]\)"):
        accuracy_figure(runs)


def test_write_report(tmp_path):
    runs = runs_three_methods()
    command = "adacore compare --methods adacore,random,full --seeds 0,1,2 --out out"
    paths = write_report(runs, tmp_path / "out", target=0.9, command=command)
    assert set(paths) == {"results_json", "results_md", "accuracy_vs_epoch",
                          "accuracy_vs_examples", "accuracy_vs_seconds", "time_to_accuracy",
                          "gradient_error"}
    document = read_json(paths["results_json"])
    assert document["runs"] == json.loads(json.dumps(runs))
    assert document["summary"][0]["test_accuracy_at_best_val"]["mean"] == pytest.approx(0.94)
    assert document["speedup"]["methods"]["adacore"]["speedup"] == pytest.approx(2.5)
    assert document["command"] == command
    assert paths["results_md"].read_text() == markdown_table(runs, target=0.9,
                                                             command=command)
    assert f"Command: `{command}`" in paths["results_md"].read_text()
    # paired: AdaCore minus each method, seed by seed (hand values: see
    # test_markdown_table_cells; p on 2 df in closed form, 1 - t / sqrt(2 + t^2))
    paired = document["paired"]
    assert list(paired) == ["random", "full"]
    random = paired["random"]
    assert random["vs"] == "adacore" and random["seeds"] == [0, 1, 2]
    assert random["mean_diff"] == pytest.approx(0.09)
    half_width = T_975_DF2 * 0.02 / math.sqrt(3)
    assert random["ci95"] == pytest.approx([0.09 - half_width, 0.09 + half_width])
    t = 0.09 / (0.02 / math.sqrt(3))
    assert random["p_value"] == pytest.approx(1 - t / math.sqrt(2 + t * t))
    assert random["p_value_wilcoxon"] == pytest.approx(0.25)      # 2 / 2^3: all positive
    assert "ttest_rel" in random["test"] and random["note"] is None
    assert paired["full"]["mean_diff"] == pytest.approx(-0.1 / 3)
    assert paired["full"]["p_value"] == pytest.approx(1 - 10 / math.sqrt(102))
    # full's finals 0.97, 0.97, 0.98: threshold 0.9633; full reaches it at epoch 3 in every
    # seed (6, 4.5, 7.5 s), adacore (best 0.96) and random never
    timing = document["time_to_full_accuracy"]
    assert timing["threshold"] == pytest.approx(0.97 + 1 / 300 - 0.01)
    assert timing["methods"]["full"]["seconds"] == pytest.approx(6.0)
    assert timing["methods"]["adacore"]["seconds"] is None
    for key in ("accuracy_vs_epoch", "accuracy_vs_examples", "accuracy_vs_seconds",
                "time_to_accuracy", "gradient_error"):
        assert_png(paths[key])
    assert leftovers(tmp_path / "out") == []


def test_write_report_without_adacore_has_no_paired_key(tmp_path):
    paths = write_report(copy.deepcopy(RANDOM + FULL), tmp_path / "out")
    document = read_json(paths["results_json"])
    assert "paired" not in document and document["command"] is None


def test_write_report_bad_input_writes_nothing(tmp_path):
    runs = runs_three_methods()
    runs[4]["history"][1]["wall_seconds"] = 0.05  # cumulative time going backwards
    with pytest.raises(InputError, match="cumulative"):
        write_report(runs, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- bad input

def _without(key):
    runs = runs_two_methods()
    del runs[2][key]
    return runs


def _with(position, key, value):
    runs = runs_two_methods()
    runs[position][key] = value
    return runs


@pytest.mark.parametrize("runs, match", [
    ([], "runs: got \\[\\], expected a non-empty list"),
    ({"method": "x"}, "runs: got .*expected a list of run records"),
    ([1], r"runs\[0\]: got 1, expected a run record"),
    (_without("test_accuracy_at_best_val"),
     r"runs\[2\]: missing key\(s\) test_accuracy_at_best_val"),
    (_with(1, "fraction", 0.05), r"runs\[1\]\['fraction'\]: got 0.05, expected the same "
                                 r"fraction as method 'adacore'"),
    (_with(0, "fraction_visited", float("nan")),
     r"runs\[0\]\['fraction_visited'\]: got nan, expected a finite number in \[0, 1\]"),
    (_with(3, "final_test_accuracy", 86.0), r"runs\[3\]\['final_test_accuracy'\]: got 86.0"),
    (_with(0, "select_seconds", -1.0), r"select_seconds'\]: got -1.0, expected a finite"),
    (_with(1, "seed", 0), r"runs\[1\]\['seed'\]: got 0, expected a seed not already used"),
    (_with(1, "seed", True), r"runs\[1\]\['seed'\]: got True, expected an int"),
    (_with(4, "dataset", "cifar10"), r"runs\[4\]\['dataset'\]: got 'cifar10', expected the "
                                     r"same dataset"),
    (_with(0, "method", ""), r"runs\[0\]\['method'\]: got '', expected a non-empty string"),
])
def test_summarize_rejects_bad_runs(runs, match):
    with pytest.raises(InputError, match=match):
        summarize(runs)


def test_bad_history_values():
    runs = runs_two_methods()
    runs[0]["history"][1]["val_accuracy"] = float("nan")
    with pytest.raises(InputError, match=r"runs\[0\]\['history'\]\[1\]\['val_accuracy'\]: got nan"):
        summarize(runs)
    runs = runs_two_methods()
    del runs[0]["history"][0]["wall_seconds"]
    with pytest.raises(InputError, match=r"history'\]\[0\]: missing key\(s\) wall_seconds"):
        speedup_to_target(runs, target=0.9)
    runs = runs_two_methods()
    del runs[0]["history"]
    with pytest.raises(InputError, match=r"runs\[0\]: missing key history"):
        accuracy_figure(runs)


def test_bad_view_and_out_dir(tmp_path):
    with pytest.raises(InputError, match="x: got 'loss'"):
        accuracy_figure(runs_two_methods(), x="loss")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="out_dir"):
        plot_curves(runs_two_methods(), blocker)


@pytest.mark.parametrize("build", [lambda runs: gradient_error_figure(runs),
                                   lambda runs: accuracy_figure(runs, x="seconds")])
def test_figure_titles_fit_inside_the_figure(build, title_fits):
    title_fits(build(runs_three_methods()))


def test_report_re_exports_each_name_from_its_home():
    # report.py is the orchestrator; the names imported from it before the split into
    # run_records / summary / tables / plots / results_io are the same objects
    import adacore.experiments as experiments
    from adacore.experiments import plots, report, results_io, summary, tables

    homes = {name: module for module in (plots, results_io, summary, tables)
             for name in module.__all__}
    for name in report.__all__:
        if name != "write_report":
            assert getattr(report, name) is getattr(homes[name], name), name
    for name in experiments.__all__:
        if name in report.__all__:
            assert getattr(experiments, name) is getattr(report, name), name
