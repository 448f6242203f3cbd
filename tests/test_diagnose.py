"""One-round diagnosis: each measure against hand-computed numbers; report, figures, files."""

import copy
import json
import math

import numpy as np
import pytest
import torch

from adacore.coreset import Coreset
from adacore.curvature import softmax_ce_logit_terms
from adacore.experiments.diagnose import (as_estimator, curvature_spread, diagnose,
                                          dimension_error_summary, dimension_scale,
                                          per_dimension_error, preconditioned_error)
from adacore.experiments.diagnosis_report import (diagnose_figures, diagnosis_markdown,
                                                  write_diagnosis)
from adacore.selection.budgets import per_class_budgets
from adacore.strategies import STRATEGIES, get_strategy
from adacore.validation import InputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def hand_coreset(indices, weights):
    return Coreset(indices=indices, weights=weights, gains=np.full(len(indices), np.nan))


# --------------------------------------------------------------------------- per dimension

# Column sums 10, 8, 0, 2; mean |g| per column 2.5, 2, 1.5, 0.5.
GRADS = np.array([[1.0, 2.0, 1.0, 1.0],
                  [3.0, 0.0, -1.0, 0.0],
                  [2.0, 4.0, 2.0, 1.0],
                  [4.0, 2.0, -2.0, 0.0]])
# rows 1 and 2 with weights 3 and 1: estimates 11, 4, -1, 1
CORESET = hand_coreset([1, 2], [3.0, 1.0])


def test_per_dimension_error_by_hand():
    errors = per_dimension_error(GRADS, CORESET)
    # |10 - 11| / 10, |8 - 4| / 8, undefined (sum 0), |2 - 1| / 2
    assert errors[[0, 1, 3]] == pytest.approx([0.1, 0.5, 0.5])
    assert math.isnan(errors[2])


def test_per_dimension_error_of_the_full_set_is_zero_and_torch_input_works():
    full = hand_coreset(np.arange(4), np.ones(4))
    errors = per_dimension_error(torch.tensor(GRADS, dtype=torch.float32), full)
    assert errors[[0, 1, 3]] == pytest.approx([0.0, 0.0, 0.0], abs=1e-7)
    assert math.isnan(errors[2])


def test_dimension_summary_by_hand():
    scale = dimension_scale(GRADS)
    assert scale == pytest.approx([2.5, 2.0, 1.5, 0.5])
    summary = dimension_error_summary(per_dimension_error(GRADS, CORESET), scale)
    # defined errors 0.1, 0.5, 0.5; lowest-scale quarter = dim 3, highest = dim 0
    assert summary["median"] == pytest.approx(0.5)
    assert summary["max"] == pytest.approx(0.5)
    assert summary["low_scale_median"] == pytest.approx(0.5)
    assert summary["high_scale_median"] == pytest.approx(0.1)
    assert summary["low_over_high"] == pytest.approx(5.0)
    assert summary["undefined_dimensions"] == 1


def test_dimension_summary_quarters_take_the_median_of_ceil_p_over_4():
    # 8 dimensions, scale increasing with the index: quarters {0, 1} and {6, 7}
    errors = np.array([4.0, 2.0, 9.0, 9.0, 9.0, 9.0, 0.5, 0.1])
    summary = dimension_error_summary(errors, np.arange(1.0, 9.0))
    assert summary["low_scale_median"] == pytest.approx(3.0)
    assert summary["high_scale_median"] == pytest.approx(0.3)


# --------------------------------------------------------------------------- preconditioned

PRE_GRADS = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [2.0, 0.0]])
PRE_DIAG = np.array([[-1.0, 1.0], [1.0, 2.0], [0.5, 1.0], [2.0, 4.0]])  # |d| is used
PRE_CORESET = hand_coreset([2, 3], [1.0, 2.0])


def test_preconditioned_error_by_hand_without_damping():
    # u = [[1, 0], [0, 1], [2, 1], [1, 0]]: sum [4, 2], estimate [4, 1]
    value = preconditioned_error(PRE_GRADS, PRE_DIAG, PRE_CORESET, eps=0.0)
    assert value == pytest.approx(1.0 / math.sqrt(20.0))


def test_preconditioned_error_by_hand_with_damping():
    # eps = 1: u = [[1/2, 0], [0, 2/3], [2/3, 1/2], [2/3, 0]]; sum [11/6, 7/6],
    # estimate [2, 1/2], difference [-1/6, 2/3]: error sqrt(17 / 170)
    value = preconditioned_error(PRE_GRADS, PRE_DIAG, PRE_CORESET, eps=1.0)
    assert value == pytest.approx(math.sqrt(0.1))


def test_preconditioned_error_default_eps_is_adacores():
    value = preconditioned_error(PRE_GRADS, PRE_DIAG, PRE_CORESET)
    u = PRE_GRADS / (np.abs(PRE_DIAG) + 1e-4)
    full = u.sum(axis=0)
    expected = np.linalg.norm(full - (1.0 * u[2] + 2.0 * u[3])) / np.linalg.norm(full)
    assert value == pytest.approx(expected)
    assert value != pytest.approx(1.0 / math.sqrt(20.0), rel=1e-9)


# --------------------------------------------------------------------------- curvature

def test_curvature_spread_by_hand():
    v = np.arange(1.0, 11.0)
    diag = np.stack([0.6 * v, 0.8 * v], axis=1)       # ||d_i|| = v: 1, ..., 10
    spread = curvature_spread(diag, hand_coreset([0, 1, 9], [5.0, 3.0, 2.0]))
    # deciles of 1..10 are 1.9, 2.8, ..., 9.1: each example has its own bin
    assert spread["full_quantiles"] == pytest.approx({"q10": 1.9, "q50": 5.5, "q90": 9.1})
    # selected 1, 2, 10: linear quantiles 1.2, 2, 8.4
    assert spread["selected_quantiles"] == pytest.approx({"q10": 1.2, "q50": 2.0, "q90": 8.4})
    assert spread["bins_covered"] == 3
    assert spread["bins_available"] == 10
    assert spread["full_bin_share"] == pytest.approx([0.1] * 10)
    assert spread["weighted_bin_share"] == pytest.approx([0.5, 0.3] + [0.0] * 7 + [0.2])
    # sum_b min(share, 0.1) over the three bins hit
    assert spread["weighted_coverage"] == pytest.approx(0.3)
    assert spread["selected_curvature"] == pytest.approx([1.0, 2.0, 10.0])


def test_curvature_spread_with_one_curvature_has_one_bin():
    spread = curvature_spread(np.ones((6, 3)), hand_coreset([4], [6.0]))
    assert spread["bins_available"] == 1
    assert spread["bins_covered"] == 1
    # bins are [edge_b, edge_b+1): a value equal to every edge lies in the top bin
    assert spread["weighted_bin_share"] == pytest.approx([0.0] * 9 + [1.0])
    assert spread["weighted_coverage"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- weights

def test_unit_weights_are_rescaled_to_sum_n_and_others_kept():
    unit = Coreset(indices=[0, 3], weights=[1.0, 1.0], gains=[0.0, 0.0], method="glister")
    scaled, note = as_estimator(unit, 10)
    assert scaled.weights.tolist() == [5.0, 5.0]
    assert "rescaled" in note and unit.weights.tolist() == [1.0, 1.0]
    fitted = Coreset(indices=[0, 3], weights=[1.0, 7.0], gains=[0.0, 0.0], method="craig")
    kept, note = as_estimator(fitted, 10)
    assert kept.weights.tolist() == [1.0, 7.0] and "as returned" in note
    full = Coreset(indices=np.arange(4), weights=np.ones(4), gains=np.zeros(4))
    assert as_estimator(full, 4)[0].weights.tolist() == [1.0] * 4


# --------------------------------------------------------------------------- diagnose

def problem(n=60, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n // classes)
    logits = torch.tensor(rng.normal(scale=2.0, size=(n, classes)), dtype=torch.float32)
    grads, diag = softmax_ce_logit_terms(logits, labels)
    val_logits = torch.tensor(rng.normal(size=(12, classes)), dtype=torch.float32)
    val_labels = np.arange(12) % classes
    val_grads, val_diag = softmax_ce_logit_terms(val_logits, val_labels)
    return (grads.numpy(), labels, diag.numpy(), val_grads.numpy(), val_diag.numpy(),
            val_labels)


ALL = ("adacore", "craig", "glister", "random", "rs2", "full")


def test_diagnose_reports_every_method_at_the_right_budget():
    grads, labels, diag, val_grads, val_diag, val_labels = problem()
    report = diagnose(grads, labels, hessian_diag=diag, fraction=0.1, methods=ALL,
                      val_grads=val_grads, val_hessian_diag=val_diag, val_labels=val_labels)
    json.dumps(report, allow_nan=False)                          # strict JSON
    assert list(report["methods"]) == list(ALL)
    assert report["k"] == 6 and report["n"] == 60 and report["p"] == 3
    class_budgets = {str(c): b for c, b in per_class_budgets(labels, 6).items()}
    for name in ALL:
        record = report["methods"][name]
        assert record["status"] == "ok", record
        expected = 60 if name == "full" else 6
        assert record["coreset_size"] == record["requested_size"] == expected
        assert len(record["indices"]) == len(set(record["indices"])) == expected
        assert len(record["per_dimension_error"]) == 3
        if name in ("adacore", "craig", "glister", "random"):
            assert record["budgets"] == class_budgets
    assert report["methods"]["full"]["gradient_error"] == pytest.approx(0.0, abs=1e-9)
    assert report["methods"]["full"]["curvature"]["weighted_coverage"] == pytest.approx(1.0)
    glister = report["methods"]["glister"]
    assert glister["weights"] == [10.0] * 6 and "rescaled" in glister["weighting"]


# Four points of one class, k = 1 (fraction 0.25): facility location with one pick takes
# the point of least total distance (the 1-median), with weight 4.
TINY_GRADS = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [2.0, 3.0]])
# |d| + eps ~ [1, 1], [0.5, 1], [2, 1], [2, 3]: u ~ [1, 0], [4, 0], [1.5, 0], [1, 1]
TINY_DIAG = np.array([[1.0, 1.0], [-0.5, 1.0], [2.0, 1.0], [2.0, 3.0]])


def test_diagnose_by_hand_on_four_points():
    report = diagnose(TINY_GRADS, np.zeros(4, dtype=np.int64), hessian_diag=TINY_DIAG,
                      fraction=0.25, methods=("adacore", "craig"))
    craig, adacore = report["methods"]["craig"], report["methods"]["adacore"]
    # CRAIG on g: total distances 6.16, 5, 6.16, 9.32: picks point 1 = [2, 0]. The full
    # sum is [8, 3], the estimate 4 * [2, 0] = [8, 0]: errors 0 and 1 per dimension,
    # 3 / sqrt(73) in norm
    assert craig["indices"] == [1] and craig["weights"] == [4.0]
    assert craig["per_dimension_error"] == pytest.approx([0.0, 1.0], abs=1e-12)
    assert craig["gradient_error"] == pytest.approx(3 / math.sqrt(73))
    # AdaCore on u: total distances 4.5, 8.66, 4.12, 5.28: picks point 2 = [3, 0]; the
    # estimate 4 * [3, 0] = [12, 0] is off by 4 / 8 and 3 / 3 on g, and on u (sum
    # [7.5, 1], estimate [6, 0]) by sqrt(1.5^2 + 1) / sqrt(7.5^2 + 1)
    assert adacore["indices"] == [2] and adacore["weights"] == [4.0]
    assert adacore["per_dimension_error"] == pytest.approx([0.5, 1.0], rel=1e-12)
    assert adacore["gradient_error"] == pytest.approx(5 / math.sqrt(73))
    assert adacore["preconditioned_error"] == pytest.approx(math.sqrt(3.25 / 57.25), rel=1e-3)
    # CRAIG's estimate of u: 4 * [4, 0] against [7.5, 1]
    assert craig["preconditioned_error"] == pytest.approx(math.sqrt(73.25 / 57.25), rel=1e-3)
    # the higher-scale dimension 0 (mean |g| 2 against 0.75) is the better estimated one
    assert report["high_scale_dimensions"] == [0] and report["low_scale_dimensions"] == [1]
    assert craig["per_dimension_summary"]["low_scale_median"] == pytest.approx(1.0)
    assert craig["per_dimension_summary"]["high_scale_median"] == pytest.approx(0.0,
                                                                                abs=1e-12)
    assert craig["strategy_state"] == adacore["strategy_state"] == "fresh"
    assert craig["round"] == adacore["round"] == 1


def assert_same_state(state, expected):
    if isinstance(expected, dict):
        assert isinstance(state, dict) and set(state) == set(expected)
        for key in expected:
            assert_same_state(state[key], expected[key])
    elif isinstance(expected, torch.Tensor):
        assert torch.equal(state, expected)
    else:
        assert state == expected


def test_prepared_strategy_selects_on_a_copy_and_says_so():
    # an AdaCore that has seen a first round with curvature 1 everywhere: a second round
    # with TINY_DIAG differs from a fresh one only through the state it carries
    strategy = get_strategy("adacore", fraction=0.25, beta2=0.9)
    strategy.select(TINY_GRADS, np.zeros(4, dtype=np.int64), hessian_diag=np.ones((4, 2)))
    before = copy.deepcopy(strategy.state_dict())
    continued = copy.deepcopy(strategy).select(TINY_GRADS, np.zeros(4, dtype=np.int64),
                                               hessian_diag=TINY_DIAG)
    report = diagnose(TINY_GRADS, np.zeros(4, dtype=np.int64), hessian_diag=TINY_DIAG,
                      fraction=0.25, methods=("adacore", "craig"),
                      prepared={"adacore": {"strategy": strategy, "state": "restored (test)"}})
    adacore = report["methods"]["adacore"]
    assert adacore["strategy_state"] == "restored (test)" and adacore["round"] == 2
    assert report["methods"]["craig"]["strategy_state"] == "fresh"
    assert adacore["indices"] == continued.indices.tolist()
    assert_same_state(strategy.state_dict(), before)          # the caller's did not move
    with pytest.raises(InputError, match="prepared"):
        diagnose(TINY_GRADS, np.zeros(4, dtype=np.int64), hessian_diag=TINY_DIAG,
                 fraction=0.25, methods=("craig",), prepared={"craig": {"strategy": strategy,
                                                                        "state": "x"}})


def test_diagnose_is_deterministic():
    grads, labels, diag, val_grads, _, val_labels = problem()
    runs = [diagnose(grads, labels, hessian_diag=diag, fraction=0.1, methods=ALL,
                     val_grads=val_grads, val_labels=val_labels, seed=3) for _ in range(2)]
    for report in runs:
        for record in report["methods"].values():
            record.pop("select_seconds")
    assert runs[0] == runs[1]


def test_missing_inputs_and_unregistered_methods_get_a_note(monkeypatch):
    monkeypatch.delitem(STRATEGIES, "gradmatch", raising=False)
    grads, labels, diag, _, _, _ = problem()
    report = diagnose(grads, labels, hessian_diag=diag, fraction=0.1)   # default methods
    assert list(report["methods"]) == ["adacore", "craig", "gradmatch", "glister", "random"]
    glister = report["methods"]["glister"]
    assert glister["status"] == "skipped" and "val_grads" in glister["note"]
    gradmatch = report["methods"]["gradmatch"]
    assert gradmatch["status"] == "skipped" and "not registered" in gradmatch["note"]
    for name in ("adacore", "craig", "random"):
        assert report["methods"][name]["status"] == "ok"


def test_registered_gradmatch_runs_within_its_budget():
    import adacore.strategies.gradmatch  # noqa: F401  (registers "gradmatch")
    grads, labels, diag, _, _, _ = problem()
    record = diagnose(grads, labels, hessian_diag=diag, fraction=0.1,
                      methods=("gradmatch",))["methods"]["gradmatch"]
    assert record["status"] == "ok"
    assert 1 <= record["coreset_size"] <= record["requested_size"] == 6


# --------------------------------------------------------------------------- figures, files

def skipped_and_ran():
    grads, labels, diag, _, _, _ = problem()
    return diagnose(grads, labels, hessian_diag=diag, fraction=0.1,
                    methods=("adacore", "craig", "glister", "random"))


def test_figures_have_one_line_and_one_box_per_method():
    report = skipped_and_ran()              # glister skipped: no val_grads
    figures = diagnose_figures(report)
    assert set(figures) == {"per_dimension_error", "curvature_spread"}
    lines_axes = figures["per_dimension_error"].axes[0]
    assert [line.get_label() for line in lines_axes.lines] == ["adacore", "craig", "random"]
    assert lines_axes.get_yscale() == "log"
    # the line of a method is its errors in order of ascending gradient scale
    order = report["dimension_order"]
    errors = np.array(report["methods"]["craig"]["per_dimension_error"], dtype=float)
    assert lines_axes.lines[1].get_ydata() == pytest.approx(errors[order])
    box_axes = figures["curvature_spread"].axes[0]
    assert len(box_axes.patches) == 4                               # full set + 3 methods
    ticks = [label.get_text() for label in box_axes.get_xticklabels()]
    assert ticks[0] == "full set"
    assert [tick.split("\n")[0] for tick in ticks[1:]] == ["adacore", "craig", "random"]


@pytest.mark.parametrize("key", ["per_dimension_error", "curvature_spread"])
def test_figure_titles_fit_inside_the_figure(key):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = diagnose_figures(skipped_and_ran())[key]
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    title = figure.axes[0].title.get_window_extent(renderer)
    frame = figure.bbox
    assert frame.x0 <= title.x0 and title.x1 <= frame.x1, (title, frame)
    assert title.y1 <= frame.y1


def test_write_diagnosis_writes_valid_json_markdown_and_png(tmp_path):
    report = skipped_and_ran()
    out = tmp_path / "new" / "folder"
    paths = write_diagnosis(report, out)
    assert set(paths) == {"json", "markdown", "per_dimension_error", "curvature_spread"}
    assert json.loads(paths["json"].read_text()) == report
    for key in ("per_dimension_error", "curvature_spread"):
        assert paths[key].read_bytes().startswith(PNG_SIGNATURE)
    table = paths["markdown"].read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 4                                       # header + 4 methods
    assert any(row.startswith("| glister |") and "—" in row for row in rows)
    assert "val_grads" in table
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["diagnosis.json", "diagnosis.md", "per_dimension_error.png", "curvature_spread.png"])


def test_write_diagnosis_rejects_a_bad_report_before_writing(tmp_path):
    with pytest.raises(InputError, match="report"):
        write_diagnosis({"methods": {}}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("change, argument", [
    (lambda a: a.update(grads=np.where(np.eye(60, 3) > 0, np.nan, a["grads"])), "grads"),
    (lambda a: a.update(hessian_diag=a["hessian_diag"][:, :2]), "hessian_diag"),
    (lambda a: a.update(labels=a["labels"][:-1]), "labels"),
    (lambda a: a.update(fraction=0.0), "fraction"),
    (lambda a: a.update(methods=("adacore", "bogus")), "methods"),
    (lambda a: a.update(methods=("craig", "craig")), "methods"),
    (lambda a: a.update(methods="adacore"), "methods"),
    (lambda a: a.update(seed=-1), "seed"),
    (lambda a: a.update(val_grads=np.zeros((4, 5))), "val_grads"),
    (lambda a: a.update(val_hessian_diag=np.zeros((4, 3))), "val_hessian_diag"),
    (lambda a: a.update(strategy_options={"glister": {}}), "strategy_options"),
    (lambda a: a.update(strategy_options={"adacore": {"seed": 1}}), "strategy_options"),
])
def test_bad_input_names_the_argument(change, argument):
    grads, labels, diag, _, _, _ = problem()
    arguments = {"grads": grads, "labels": labels, "hessian_diag": diag, "fraction": 0.1,
                 "methods": ("adacore", "craig")}
    change(arguments)
    with pytest.raises(InputError, match=argument):
        diagnose(arguments.pop("grads"), arguments.pop("labels"), **arguments)


def test_from_run_without_a_checkpoint_names_the_flag(tmp_path):
    from adacore.experiments.diagnose import diagnose_run

    with pytest.raises(InputError, match="--from-run: .*checkpoint.pt"):
        diagnose_run(tmp_path, fraction=0.1)


def test_presentation_is_importable_from_the_measures_module():
    # imports written before diagnosis_report.py was split off keep working
    import adacore.experiments.diagnosis_report as presentation
    from adacore.experiments.diagnose import (FIGURE_FILES, diagnose_figures as figures,
                                              diagnosis_markdown as markdown,
                                              write_diagnosis as write)

    assert (figures, markdown, write) == (presentation.diagnose_figures,
                                          presentation.diagnosis_markdown,
                                          presentation.write_diagnosis)
    assert FIGURE_FILES is presentation.FIGURE_FILES
    with pytest.raises(ImportError):
        from adacore.experiments.diagnose import no_such_name  # noqa: F401


def test_measures_reject_a_coreset_outside_the_data():
    with pytest.raises(InputError, match="coreset"):
        per_dimension_error(GRADS, hand_coreset([0, 4], [1.0, 1.0]))
    with pytest.raises(InputError, match="hessian_diag"):
        preconditioned_error(PRE_GRADS, PRE_DIAG[:, :1], PRE_CORESET)
    with pytest.raises(InputError, match="eps"):
        preconditioned_error(PRE_GRADS, PRE_DIAG, PRE_CORESET, eps=-1.0)
    with pytest.raises(InputError, match="hessian_diag"):
        curvature_spread(np.full((4, 2), np.inf), PRE_CORESET)


def test_cli_diagnose_from_files_and_from_a_run(tmp_path):
    import subprocess
    import sys

    from adacore.training import TrainConfig, Trainer

    rng = np.random.default_rng(0)
    np.save(tmp_path / "g.npy", rng.standard_normal((200, 4)).astype(np.float32))
    np.save(tmp_path / "h.npy", rng.random((200, 4)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.arange(200) % 2)
    base = [sys.executable, "-m", "adacore.cli", "diagnose", "--fraction", "0.1"]
    result = subprocess.run(base + ["--vectors", str(tmp_path / "g.npy"), "--labels",
                                    str(tmp_path / "y.npy"), "--hessian", str(tmp_path / "h.npy"),
                                    "--methods", "adacore,craig,random",
                                    "--out", str(tmp_path / "files")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "| adacore | 20 |" in (tmp_path / "files" / "diagnosis.md").read_text()

    Trainer(TrainConfig(dataset="digits", method="craig", fraction=0.1, epochs=1),
            tmp_path / "run", quiet=True).run()
    result = subprocess.run(base + ["--from-run", str(tmp_path / "run"), "--out",
                                    str(tmp_path / "probed")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    probed = json.loads((tmp_path / "probed" / "diagnosis.json").read_text())
    statuses = {name: record["status"] for name, record in probed["methods"].items()}
    assert statuses == dict.fromkeys(["adacore", "craig", "gradmatch", "glister", "random"],
                                     "ok")   # the run's validation set feeds GLISTER
    states = {name: record["strategy_state"] for name, record in probed["methods"].items()}
    assert states == {"adacore": "fresh", "craig": "restored from run (round 1)",
                      "gradmatch": "fresh", "glister": "fresh", "random": "fresh"}
    assert "restored from run (round 1)" in (tmp_path / "probed" / "diagnosis.md").read_text()
    missing = subprocess.run(base + ["--labels", "y.npy", "--out", str(tmp_path / "x")],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert missing.returncode == 2 and "--vectors" in missing.stderr


def test_from_run_restores_the_runs_strategy_and_matches_its_next_round(tmp_path):
    """The reference is the trainer itself: a run of 3 epochs selects in epoch 3 with the
    model and strategy state that a 2-epoch run of the same settings ends with, so the
    diagnosis of the 2-epoch run must pick AdaCore's coreset of the 3-epoch run's round 3."""
    from adacore.experiments.diagnose import diagnose_run
    from adacore.experiments.runner import probe_run
    from adacore.training import TrainConfig, Trainer
    from adacore.training.checkpoint import load_checkpoint

    settings = dict(dataset="digits", method="adacore", fraction=0.1, select_every=1,
                    schedule="constant", beta2=0.9, probe_batch_size=1024, lr=0.05)
    Trainer(TrainConfig(epochs=2, **settings), tmp_path / "two", quiet=True).run()
    Trainer(TrainConfig(epochs=3, **settings), tmp_path / "three", quiet=True).run()
    next_round = load_checkpoint(tmp_path / "three" / "checkpoint.pt")["loader"]["coreset"]
    assert int(next_round["round"]) == 3

    report = diagnose_run(tmp_path / "two", fraction=0.1, methods=("adacore", "craig"))
    adacore = report["methods"]["adacore"]
    assert adacore["strategy_state"] == "restored from run (round 2)"
    assert adacore["round"] == 3
    assert sorted(adacore["indices"]) == sorted(next_round["indices"].tolist())
    assert report["methods"]["craig"]["strategy_state"] == "fresh"
    assert report["source"]["method"] == "adacore" and report["source"]["epoch"] == 2
    assert report["source"]["space"] == report["source"]["run_space"] == "logits"
    # the state matters: a fresh AdaCore (round 1) on the same vectors picks otherwise
    arrays = probe_run(tmp_path / "two")
    fresh = get_strategy("adacore", fraction=0.1, beta2=0.9).select(
        arrays["grads"], arrays["labels"], hessian_diag=arrays["hessian_diag"])
    assert sorted(fresh.indices.tolist()) != sorted(adacore["indices"])
    # in another space the run's per-example state does not apply: fresh, and said so
    other = diagnose_run(tmp_path / "two", fraction=0.1, methods=("adacore",),
                         space="last_layer")["methods"]["adacore"]
    assert other["strategy_state"].startswith("fresh (the run selected in space 'logits'")
    # the checkpoint was only read: a second diagnosis restores the same state
    again = diagnose_run(tmp_path / "two", fraction=0.1, methods=("adacore",))
    assert again["methods"]["adacore"]["indices"] == adacore["indices"]
    size = adacore["coreset_size"]
    assert f"| adacore | {size} | restored from run (round 2) |" in diagnosis_markdown(report)
