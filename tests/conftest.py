"""Fixtures shared by the test files."""

import pytest


@pytest.fixture
def recorded_compare(tmp_path, monkeypatch):
    """Replace ``adacore.experiments.runner.compare`` with a stand-in that records what
    the command line handed it (``settings``, ``methods``, ``seeds``, the keyword
    ``options``) and writes a
    one-word report, so CLI tests check the parsing without training anything."""
    seen = {}

    def fake_compare(settings, methods, seeds, out, **kwargs):
        seen.update(settings=settings, methods=methods, seeds=seeds, options=kwargs)
        report = tmp_path / "r.md"
        report.write_text("table")
        return {"results_md": report}

    monkeypatch.setattr("adacore.experiments.runner.compare", fake_compare)
    return seen
