"""Hostile settings and records: every entry point answers with a value or an InputError.

Property tests over the settings space (every TrainConfig field given values of the
wrong type, out of range, non-finite or huge) and fuzzing of the records a resume or a
report reads back (run.json bytes, run records with fields removed or replaced):
nothing may escape as a TypeError, KeyError, ValueError or the like, and a refusal
names what it refuses.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adacore.experiments.run_records import check_runs
from adacore.experiments.runner import _read_finished
from adacore.experiments.summary import summarize, time_to_full_accuracy
from adacore.training import TrainConfig
from adacore.training.trainer import settings_differences
from adacore.validation import InputError

FIELDS = [field.name for field in dataclasses.fields(TrainConfig)]
HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e300, -1e-300, 0.5, 2.0]),
    st.text(max_size=8), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FIELDS), HOSTILE, min_size=1, max_size=3))
def test_any_settings_are_accepted_or_refused_naming_a_setting(changes):
    config = dataclasses.replace(TrainConfig(dataset="digits", model="mlp"), **changes)
    try:
        config.validate()
    except InputError as error:
        named = str(error).split(":")[0]
        # the refusal names one of the settings given (or the method's options, which a
        # method check reads), never something else
        assert named in set(changes) | {"strategy_options", "method", "warmup_epochs"}, (
            changes, str(error))


def _record(epochs=3, method="random", seed=0):
    history = [{"epoch": e, "val_accuracy": 0.5 + 0.1 * e, "test_accuracy": 0.5 + 0.1 * e,
                "wall_seconds": float(e), "select_seconds": 0.0, "train_seconds": 1.0}
               for e in range(1, epochs + 1)]
    return {"method": method, "seed": seed, "dataset": "digits", "model": "mlp",
            "fraction": 0.1, "best_val_epoch": epochs, "best_val_accuracy": 0.5 + 0.1 * epochs,
            "test_accuracy_at_best_val": 0.5 + 0.1 * epochs,
            "final_test_accuracy": 0.5 + 0.1 * epochs, "fraction_visited": 0.3,
            "select_seconds": 0.0, "train_seconds": float(epochs), "eval_seconds": 0.1,
            "history": history, "config": dataclasses.asdict(TrainConfig(method=method))}


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_damaged_run_records_are_refused_or_summarised(data):
    runs = [_record(method="random"), _record(method="full")]
    run = data.draw(st.sampled_from(runs))
    key = data.draw(st.sampled_from(sorted(run)))
    if data.draw(st.booleans()):
        del run[key]
    else:
        run[key] = data.draw(HOSTILE)
    if data.draw(st.booleans()) and run.get("history"):
        row = run["history"][0] if isinstance(run["history"], list) else None
        if isinstance(row, dict):
            row[data.draw(st.sampled_from(sorted(row)))] = data.draw(HOSTILE)
    try:
        check_runs(runs)
        summarize(runs)
        time_to_full_accuracy(runs)
    except InputError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200) | st.builds(lambda v: json.dumps(v).encode(), HOSTILE))
def test_any_run_json_bytes_are_read_or_refused_naming_the_file(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("run") / "run.json"
    path.write_bytes(content)
    try:
        record = _read_finished(path)
    except InputError as error:
        assert "run.json" in str(error)
        return
    assert isinstance(record, dict) and isinstance(record["config"], dict)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS + ["unknown"]), HOSTILE, max_size=4))
def test_a_stored_config_of_any_content_is_compared_without_error(stored):
    # what a fuzzed run.json or checkpoint's config holds: compared, never raised on
    differences = settings_differences(stored, TrainConfig())
    assert isinstance(differences, list)
    assert all(isinstance(line, str) for line in differences)
