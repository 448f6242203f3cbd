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


@pytest.fixture
def title_fits():
    """A check that a figure's title lies inside the figure once drawn."""
    def check(figure):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(figure)
        canvas.draw()
        title = figure.axes[0].title.get_window_extent(canvas.get_renderer())
        assert figure.bbox.x0 <= title.x0 and title.x1 <= figure.bbox.x1, title
        assert title.y1 <= figure.bbox.y1
    return check
