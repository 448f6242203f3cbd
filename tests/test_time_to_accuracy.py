"""Time to full data's accuracy, accuracy at equal wall-clock time and the share of time
spent selecting, against numbers worked out by hand from small histories."""

import copy
import math

import numpy as np
import pytest

from adacore.experiments import (accuracy_at_equal_wall_clock, markdown_table, read_json,
                                 summarize, time_to_accuracy_figure, time_to_full_accuracy,
                                 write_report)
from adacore.experiments.runner import compare, read_scenario
from adacore.validation import InputError


def make_run(method, seed, *, val, test, select, train, fraction=0.01):
    """A run record with per-epoch selection and training seconds (constant per epoch);
    wall_seconds accumulates both, as the trainer's does."""
    epochs = len(test)
    history, wall = [], 0.0
    for epoch, (v, t) in enumerate(zip(val, test), start=1):
        wall = round(wall + select + train, 10)
        history.append({"epoch": epoch, "val_accuracy": v, "test_accuracy": t,
                        "select_seconds": select, "train_seconds": train,
                        "eval_seconds": 0.1, "examples_processed": 10 * epoch,
                        "wall_seconds": wall, "fraction_visited": 0.5,
                        "gradient_error": None})
    best = max(history, key=lambda row: (row["val_accuracy"], -row["epoch"]))
    return {"method": method, "seed": seed, "fraction": fraction, "dataset": "mnist",
            "model": "mlp", "final_test_accuracy": test[-1],
            "best_val_epoch": best["epoch"], "test_accuracy_at_best_val": best["test_accuracy"],
            "select_seconds": select * epochs, "train_seconds": train * epochs,
            "eval_seconds": 0.1 * epochs, "fraction_visited": 0.5, "history": history}


# Two seeds per method. full's final test accuracies 0.96 and 0.94: mean 0.95, so with a
# margin of 0.01 the threshold is 0.94.
FULL = [
    # wall 2, 4, 6, 8 s: first test >= 0.94 at epoch 3 (0.95) -> 6 s
    make_run("full", 0, val=[0.79, 0.89, 0.94, 0.95], test=[0.80, 0.90, 0.95, 0.96],
             select=0.0, train=2.0, fraction=1.0),
    # wall 2.5, 5, 7.5, 10 s: first test >= 0.94 at epoch 3 (0.945) -> 7.5 s
    make_run("full", 1, val=[0.81, 0.92, 0.93, 0.935], test=[0.82, 0.93, 0.945, 0.94],
             select=0.0, train=2.5, fraction=1.0),
]
ADACORE = [
    # wall 1, 2, 3 s (0.4 s selecting + 0.6 s training an epoch): reached at epoch 2, 2 s
    make_run("adacore", 0, val=[0.88, 0.93, 0.92], test=[0.90, 0.945, 0.95],
             select=0.4, train=0.6),
    # wall 1.2, 2.4, 3.6 s (0.6 + 0.6): reached at epoch 3, 3.6 s
    make_run("adacore", 1, val=[0.90, 0.89, 0.94], test=[0.91, 0.93, 0.942],
             select=0.6, train=0.6),
]
RANDOM = [
    # wall 0.1, 0.2, 0.3 s: never reaches 0.94 (the best is 0.93)
    make_run("random", 0, val=[0.84, 0.91, 0.90], test=[0.85, 0.90, 0.93],
             select=0.01, train=0.09),
    # reaches 0.95 at epoch 2 (0.2 s): one seed of two
    make_run("random", 1, val=[0.85, 0.92, 0.93], test=[0.86, 0.95, 0.91],
             select=0.01, train=0.09),
]
CRAIG = [
    # wall 0.5, 1.0, 1.5 s: never reaches 0.94 in either seed
    make_run("craig", 0, val=[0.79, 0.84, 0.86], test=[0.80, 0.85, 0.88],
             select=0.25, train=0.25),
    make_run("craig", 1, val=[0.80, 0.87, 0.85], test=[0.81, 0.86, 0.87],
             select=0.25, train=0.25),
]


def all_runs():
    return copy.deepcopy(FULL + ADACORE + RANDOM + CRAIG)


# --------------------------------------------------------------------------- time to full

def test_time_to_full_accuracy_by_hand():
    result = time_to_full_accuracy(all_runs())
    assert result["reference"] == "full" and result["margin"] == 0.01
    assert result["reference_final_test_accuracy"] == pytest.approx(0.95)
    assert result["threshold"] == pytest.approx(0.94)
    assert result["note"] is None
    methods = result["methods"]
    assert list(methods) == ["full", "adacore", "random", "craig"]
    # full: its own first epoch within 1 point of its final accuracy, 6 and 7.5 s
    full = methods["full"]
    assert full["seconds"] == pytest.approx(6.75)
    assert full["seconds_std"] == pytest.approx(1.5 / math.sqrt(2))
    assert full["speedup"] == pytest.approx(1.0)
    assert full["by_seed"] == [{"seed": 0, "epoch": 3, "seconds": 6.0},
                               {"seed": 1, "epoch": 3, "seconds": 7.5}]
    # adacore: 2 and 3.6 s, mean 2.8 -> 6.75 / 2.8
    adacore = methods["adacore"]
    assert adacore["seconds"] == pytest.approx(2.8)
    assert adacore["seconds_std"] == pytest.approx(1.6 / math.sqrt(2))
    assert adacore["speedup"] == pytest.approx(6.75 / 2.8)
    assert (adacore["seeds_reached"], adacore["n_seeds"], adacore["note"]) == (2, 2, None)
    # random: one seed of two reached it (at 0.2 s): no time, no speedup
    random = methods["random"]
    assert random["seconds"] is None and random["speedup"] is None
    assert (random["seeds_reached"], random["n_seeds"]) == (1, 2)
    assert random["by_seed"] == [{"seed": 0, "epoch": None, "seconds": None},
                                 {"seed": 1, "epoch": 2, "seconds": pytest.approx(0.2)}]
    assert "in only 1 of 2 seeds" in random["note"]
    # craig: never
    craig = methods["craig"]
    assert craig["seconds"] is None and craig["seeds_reached"] == 0
    assert craig["note"] == ("never reached 94.0% test accuracy (full's final 95.0% − "
                             "1 point)")


def test_threshold_is_on_test_not_validation_accuracy():
    # adacore seed 0 reaches 0.94 validation accuracy nowhere (best 0.93) but 0.945 test
    # accuracy at epoch 2: the time is that epoch's
    result = time_to_full_accuracy(all_runs())
    assert result["methods"]["adacore"]["by_seed"][0] == {"seed": 0, "epoch": 2,
                                                          "seconds": 2.0}


def test_wider_margin_by_hand():
    # margin 0.05: threshold 0.90. full 4 s and 5 s (epoch 2: 0.90, 0.93) -> 4.5 s;
    # adacore epoch 1 (0.90 at 1 s, 0.91 at 1.2 s) -> 1.1 s; random 0.2 s in both seeds
    # (0.90, 0.95 at epoch 2); craig never (best 0.88).
    methods = time_to_full_accuracy(all_runs(), margin=0.05)["methods"]
    assert methods["full"]["seconds"] == pytest.approx(4.5)
    assert methods["adacore"]["seconds"] == pytest.approx(1.1)
    assert methods["adacore"]["speedup"] == pytest.approx(4.5 / 1.1)
    assert methods["random"]["seconds"] == pytest.approx(0.2)
    assert methods["random"]["speedup"] == pytest.approx(22.5)
    assert methods["craig"]["seconds"] is None


def test_an_accuracy_equal_to_the_threshold_reaches_it():
    # finals 0.98 and 0.93: the threshold is 0.955 - 0.01 = 0.945 by hand, but
    # 0.9450000000000001 in floating point; a test accuracy of 0.945 reaches it
    runs = [make_run("full", 0, val=[0.8, 0.9, 0.95], test=[0.90, 0.945, 0.98], select=0.0,
                     train=1.0, fraction=1.0),
            make_run("full", 1, val=[0.8, 0.9, 0.95], test=[0.91, 0.945, 0.93], select=0.0,
                     train=2.0, fraction=1.0)]
    result = time_to_full_accuracy(runs)
    assert result["threshold"] > 0.945                     # the rounding this is about
    assert [row["epoch"] for row in result["methods"]["full"]["by_seed"]] == [2, 2]
    assert result["methods"]["full"]["seconds"] == pytest.approx(3.0)   # 2 s and 4 s


def test_reference_not_reached_in_every_seed():
    # full finals 0.99 and 0.90: threshold 0.935, which seed 1 never reaches
    runs = all_runs()
    runs[0]["history"][3]["test_accuracy"] = runs[0]["final_test_accuracy"] = 0.99
    runs[0]["test_accuracy_at_best_val"] = 0.99                 # its best epoch is the last
    runs[1]["history"][2]["test_accuracy"], runs[1]["history"][3]["test_accuracy"] = 0.9, 0.9
    runs[1]["final_test_accuracy"], runs[1]["test_accuracy_at_best_val"] = 0.9, 0.9
    result = time_to_full_accuracy(runs)
    assert result["threshold"] == pytest.approx(0.935)
    full, adacore = result["methods"]["full"], result["methods"]["adacore"]
    assert full["seconds"] is None and full["seeds_reached"] == 1
    # adacore reaches 0.935 at 2 s and 3.6 s but has no reference time to compare with
    assert adacore["seconds"] == pytest.approx(2.8) and adacore["speedup"] is None
    assert "reference 'full' did not reach 93.5% test accuracy" in adacore["note"]


def test_without_the_full_method():
    result = time_to_full_accuracy(copy.deepcopy(ADACORE + RANDOM))
    assert result["threshold"] is None and result["reference_final_test_accuracy"] is None
    assert "'full' is not among the runs (adacore, random)" in result["note"]
    for entry in result["methods"].values():
        assert entry["seconds"] is None and entry["speedup"] is None
        assert entry["seeds_reached"] is None and entry["n_seeds"] == 2
        assert entry["note"] == result["note"]


def test_other_reference():
    # reference adacore: finals 0.95 and 0.942 -> threshold 0.936. adacore itself: 0.945
    # at 2 s and 0.942 at 3.6 s (2.8 s); full 0.95 at 6 s and 0.945 at 7.5 s (6.75 s)
    methods = time_to_full_accuracy(all_runs(), reference="adacore")["methods"]
    assert methods["full"]["speedup"] == pytest.approx(2.8 / 6.75)
    assert methods["adacore"]["speedup"] == pytest.approx(1.0)


@pytest.mark.parametrize("margin, match", [
    (0.0, r"margin: got 0.0, expected a fraction in \(0, 1\)"), (1.0, "margin: got 1.0"),
    (1, "margin: got 1"), (-0.01, "margin"), (float("nan"), "margin: got nan"),
    ("0.01", "margin"), (True, "margin: got True")])
def test_bad_margin(margin, match):
    with pytest.raises(InputError, match=match):
        time_to_full_accuracy(all_runs(), margin=margin)


def test_bad_reference_and_runs():
    with pytest.raises(InputError, match="reference: got ''"):
        time_to_full_accuracy(all_runs(), reference="")
    runs = all_runs()
    del runs[3]["history"][1]["wall_seconds"]
    with pytest.raises(InputError, match=r"runs\[3\]\['history'\]\[1\]: missing key\(s\) "
                                         r"wall_seconds"):
        time_to_full_accuracy(runs)
    runs = all_runs()
    del runs[2]["history"]
    with pytest.raises(InputError, match=r"runs\[2\]: missing key history"):
        time_to_full_accuracy(runs)


# --------------------------------------------------------------------------- equal time

def test_accuracy_at_equal_wall_clock_default_budget_by_hand():
    # total wall time, mean over seeds: full 9 s, adacore 3.3 s, random 0.3 s, craig
    # 1.5 s -> the budget is random's 0.3 s
    result = accuracy_at_equal_wall_clock(all_runs())
    assert result["budget_seconds"] == pytest.approx(0.3)
    assert result["budget_method"] == "random"
    methods = result["methods"]
    assert [methods[m]["total_seconds"] for m in methods] == pytest.approx([9, 3.3, 0.3, 1.5])
    # random: every epoch fits; best validation at epoch 2 (seed 0: test 0.90, not its best
    # test 0.93) and epoch 3 (seed 1: test 0.91, not 0.95) -> 0.905
    random = methods["random"]
    assert random["test_accuracy"] == pytest.approx(0.905)
    assert random["test_accuracy_std"] == pytest.approx(0.01 / math.sqrt(2))
    assert [row["epoch"] for row in random["by_seed"]] == [2, 3]
    assert random["note"] is None
    # nobody else has finished an epoch by 0.3 s
    for method in ("full", "adacore", "craig"):
        entry = methods[method]
        assert entry["test_accuracy"] is None and entry["seeds_with_epoch"] == 0
        assert entry["note"].startswith("no epoch ended within 0.3 s")
    assert "earliest first epoch ended at 1 s" in methods["adacore"]["note"]


def test_accuracy_at_equal_wall_clock_given_budget_by_hand():
    methods = accuracy_at_equal_wall_clock(all_runs(), budget=2.0)["methods"]
    # adacore seed 0: epochs 1 and 2 (1, 2 s): best validation epoch 2 -> test 0.945;
    # seed 1: epoch 1 only (1.2 s; 2.4 s is past) -> 0.91. Mean 0.9275.
    adacore = methods["adacore"]
    assert adacore["test_accuracy"] == pytest.approx(0.9275)
    assert adacore["test_accuracy_std"] == pytest.approx(0.035 / math.sqrt(2))
    assert adacore["by_seed"] == [
        {"seed": 0, "epoch": 2, "wall_seconds": 2.0, "test_accuracy": 0.945},
        {"seed": 1, "epoch": 1, "wall_seconds": 1.2, "test_accuracy": 0.91}]
    # craig's runs end at 1.5 s: whole runs, best validation epochs 3 and 2 -> 0.88, 0.86
    assert methods["craig"]["test_accuracy"] == pytest.approx(0.87)
    assert "judged on the whole run" in methods["craig"]["note"]
    # full: seed 0's first epoch ends at exactly 2 s (test 0.80), seed 1's at 2.5 s
    full = methods["full"]
    assert full["test_accuracy"] is None and full["seeds_with_epoch"] == 1
    assert full["by_seed"][0]["test_accuracy"] == 0.80 and full["by_seed"][1]["epoch"] is None
    assert full["note"] == "an epoch ended within 2 s in only 1 of 2 seeds"


def test_equal_wall_clock_ties_on_validation_take_the_earliest_epoch():
    run = make_run("random", 0, val=[0.9, 0.9, 0.8], test=[0.7, 0.8, 0.9], select=0.0,
                   train=1.0)
    result = accuracy_at_equal_wall_clock([run], budget=3.0)
    assert result["methods"]["random"]["by_seed"][0]["epoch"] == 1
    assert result["methods"]["random"]["test_accuracy"] == pytest.approx(0.7)


@pytest.mark.parametrize("budget", [-1.0, float("nan"), float("inf"), "2", True])
def test_bad_budget(budget):
    with pytest.raises(InputError, match="budget: got"):
        accuracy_at_equal_wall_clock(all_runs(), budget=budget)


# --------------------------------------------------------------------------- selecting

def test_selection_share_by_hand():
    summary = {entry["method"]: entry for entry in summarize(all_runs())}
    # adacore: 0.4 / 1.0 and 0.6 / 1.2 per epoch -> 0.4 and 0.5
    assert summary["adacore"]["selection_share"] == pytest.approx(
        {"mean": 0.45, "std": 0.1 / math.sqrt(2)})
    assert summary["random"]["selection_share"] == pytest.approx({"mean": 0.1, "std": 0.0})
    assert summary["craig"]["selection_share"] == pytest.approx({"mean": 0.5, "std": 0.0})
    assert summary["full"]["selection_share"] == {"mean": 0.0, "std": 0.0}


def test_selection_share_of_a_run_without_time_is_none():
    run = make_run("random", 0, val=[0.9], test=[0.9], select=0.0, train=0.0)
    (entry,) = summarize([run])
    assert entry["selection_share"] is None
    assert "- random, time selecting: no selection or training time recorded." in \
        markdown_table([run]).splitlines()


# --------------------------------------------------------------------------- report

def time_table(text):
    lines = text.splitlines()
    start = lines.index("| method | seconds to within 1 point of full | speedup vs full | "
                        "test acc. at 0.3 s (best val) | time selecting |")
    return lines, lines[start:start + 6]


def test_markdown_time_table_by_hand():
    lines, table = time_table(markdown_table(all_runs()))
    assert ("Time to accuracy, selection included: threshold 94.0% test accuracy (full's "
            "final 95.0% − 1 point); equal wall-clock budget 0.3 s (random's total time).") \
        in lines
    assert table[2:] == [
        "| full | 6.8 ± 1.1 | 1.0× | no epoch yet | 0.0 ± 0.0% |",
        # 2.8 ± 1.13 s; 6.75 / 2.8 = 2.41
        "| adacore | 2.8 ± 1.1 | 2.4× | no epoch yet | 45.0 ± 7.1% |",
        "| random | not reached (1 of 2 seeds) | — | 90.5 ± 0.7 | 10.0 ± 0.0% |",
        "| craig | not reached | — | no epoch yet | 50.0 ± 0.0% |"]
    text = "\n".join(lines)
    assert "reporting measure on test accuracy" in text
    assert "- random, time to accuracy: reached 94.0% test accuracy (full's final 95.0% − " \
           "1 point) in only 1 of 2 seeds." in lines
    assert "- craig, time to accuracy: never reached 94.0% test accuracy (full's final " \
           "95.0% − 1 point)." in lines
    assert "- adacore, at 0.3 s: no epoch ended within 0.3 s (the earliest first epoch " \
           "ended at 1 s)." in lines


def test_markdown_time_table_other_margin_and_no_full():
    lines = markdown_table(all_runs(), margin=0.05).splitlines()
    assert any(line.startswith("| method | seconds to within 5 points of full |")
               for line in lines)
    assert "| random | 0.20 ± 0.00 | 22.5× | 90.5 ± 0.7 | 10.0 ± 0.0% |" in lines
    lines = markdown_table(copy.deepcopy(ADACORE + RANDOM)).splitlines()
    assert "| adacore | n/a | n/a | no epoch yet | 45.0 ± 7.1% |" in lines
    assert ("Note: reference method 'full' is not among the runs (adacore, random): no "
            "accuracy threshold, no time to it, no speedup.") in lines
    with pytest.raises(InputError, match="margin: got 2"):
        markdown_table(all_runs(), margin=2)


def test_markdown_without_histories_says_so():
    runs = all_runs()
    for run in runs:
        del run["history"]
    lines = markdown_table(runs).splitlines()
    assert "Time to accuracy: not computed (the runs carry no per-epoch history)." in lines


def test_time_to_accuracy_figure():
    figure = time_to_accuracy_figure(all_runs())
    (axes,) = figure.axes
    assert axes.get_xscale() == "log" and "test accuracy (%)" == axes.get_ylabel()
    labels = [line.get_label() for line in axes.lines]
    assert labels[:4] == ["full (n=2)", "adacore (n=2)", "random (n=2)", "craig (n=2)"]
    # the curves: mean test accuracy against mean wall seconds
    np.testing.assert_allclose(axes.lines[1].get_xdata(), [1.1, 2.2, 3.3])
    np.testing.assert_allclose(axes.lines[1].get_ydata(), [90.5, 93.75, 94.6])
    threshold, budget = axes.lines[4], axes.lines[5]
    assert threshold.get_label() == "94.0% (full − 1 point)"
    np.testing.assert_allclose(threshold.get_ydata(), [94.0, 94.0])
    np.testing.assert_allclose(budget.get_xdata(), [0.3, 0.3])
    # markers where full (6.75 s) and adacore (2.8 s) reached it; random and craig did not
    markers = axes.lines[6:]
    assert [tuple(line.get_xdata()) for line in markers] == [(6.75,), (pytest.approx(2.8),)]
    assert markers[1].get_color() == axes.lines[1].get_color()
    without = time_to_accuracy_figure(copy.deepcopy(ADACORE + RANDOM))
    assert "not among the methods" in without.axes[0].get_title()
    assert len(without.axes[0].lines) == 3    # two curves and the budget


@pytest.mark.parametrize("runs", [all_runs, lambda: copy.deepcopy(ADACORE + RANDOM)])
def test_time_to_accuracy_title_fits_inside_the_figure(runs, title_fits):
    title_fits(time_to_accuracy_figure(runs()))


def test_write_report_new_keys_and_plot(tmp_path):
    runs = all_runs()
    paths = write_report(runs, tmp_path / "out", margin=0.05)
    assert paths["time_to_accuracy"] == tmp_path / "out" / "time_to_accuracy.png"
    assert paths["time_to_accuracy"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    document = read_json(paths["results_json"])
    timing = document["time_to_full_accuracy"]
    assert timing["margin"] == 0.05 and timing["threshold"] == pytest.approx(0.90)
    assert timing["methods"]["adacore"]["speedup"] == pytest.approx(4.5 / 1.1)
    equal = document["accuracy_at_equal_wall_clock"]
    assert equal["budget_method"] == "random"
    assert equal["methods"]["random"]["test_accuracy"] == pytest.approx(0.905)
    assert equal["methods"]["full"]["test_accuracy"] is None
    assert document["summary"][1]["selection_share"]["mean"] == pytest.approx(0.45)
    assert {"runs", "summary", "command", "paired"} <= set(document)   # the old keys stay
    assert paths["results_md"].read_text() == markdown_table(runs, margin=0.05)
    with pytest.raises(InputError, match="margin"):
        write_report(runs, tmp_path / "bad", margin=0)
    assert not (tmp_path / "bad").exists()


# --------------------------------------------------------------------------- scenario

def test_scenario_full_margin(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text('methods = ["random"]\nfull_margin = 0.02\n')
    assert read_scenario(scenario)["full_margin"] == 0.02
    for bad in ("0", "1.0", "1", '"0.01"', "-0.5"):
        scenario.write_text(f"full_margin = {bad}\n")
        with pytest.raises(InputError, match=r"full_margin: got .*expected a fraction in "
                                             r"\(0, 1\)"):
            read_scenario(scenario)


def test_compare_refuses_a_bad_full_margin_before_training(tmp_path):
    with pytest.raises(InputError, match="full_margin: got 1.5"):
        compare({"dataset": "digits", "epochs": 1}, ["random"], [0], tmp_path / "out",
                full_margin=1.5, quiet=True)
    assert not (tmp_path / "out").exists()


def test_compare_hands_full_margin_to_the_report(tmp_path):
    settings = dict(dataset="digits", model="mlp", fraction=0.1, epochs=2, select_every=2,
                    batch_size=32, lr=0.1)
    paths = compare(settings, ["random", "full"], [0], tmp_path, full_margin=0.05,
                    quiet=True)
    document = read_json(paths["results_json"])
    timing = document["time_to_full_accuracy"]
    assert timing["margin"] == 0.05
    full_final = document["runs"][1]["history"][-1]["test_accuracy"]
    assert timing["threshold"] == pytest.approx(full_final - 0.05)
    assert "within 5 points of full" in paths["results_md"].read_text()
    assert paths["time_to_accuracy"].exists()
