"""benchmarks/option_study.py: each variant runs with the settings ``adacore compare``
would give its method, then the variant's own."""

import runpy
from pathlib import Path

import pytest

from adacore.experiments.runner import read_scenario

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    return runpy.run_path(str(ROOT / "benchmarks" / "option_study.py"), run_name="study")


def test_a_variant_gets_its_methods_per_method_settings_then_its_own(study):
    config = study["_config"]
    scenario = read_scenario(ROOT / "experiments" / "mnist_imbalanced_1pct.toml")
    # the scenario gives gradmatch equal budgets and everything else proportional ones
    assert config(scenario, {"method": "gradmatch"}, 0).budget == "equal"
    assert config(scenario, {"method": "adacore"}, 0).budget == "proportional"
    # the variant's own setting wins, and the seed is the study's
    chosen = config(scenario, {"method": "gradmatch", "budget": "proportional"}, 3)
    assert chosen.budget == "proportional" and chosen.seed == 3
    assert chosen.imbalance_ratio == scenario["imbalance_ratio"]


def test_per_method_settings_stay_with_their_method(study, tmp_path):
    config = study["_config"]
    scenario = read_scenario(ROOT / "experiments" / "mnist_lenet_10pct_fast.toml")
    craig = config(scenario, {"method": "craig"}, 0)
    assert (craig.pool, craig.refine_to, craig.max_weight) == (2.0, "mean", 10.0)
    rs2 = config(scenario, {"method": "rs2"}, 0)
    assert (rs2.pool, rs2.refine_to, rs2.max_weight) == (None, None, None)
    # strategy options are merged, the variant's on top of the method's
    path = tmp_path / "s.toml"
    path.write_text('dataset = "digits"\nstrategy_options = {epsilon = 0.1}\n'
                    '[per_method.craig]\nstrategy_options = {optimizer = "naive"}\n')
    merged = config(read_scenario(path), {"method": "craig",
                                          "strategy_options": {"neighbors": 8}}, 0)
    assert merged.strategy_options == {"epsilon": 0.1, "optimizer": "naive", "neighbors": 8}
