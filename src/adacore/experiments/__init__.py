"""Experiments: result summaries, Markdown tables, JSON records and plots of runs."""

from adacore.experiments.report import (accuracy_figure, gradient_error_figure, markdown_table,
                                        plot_curves, plot_gradient_error, read_json,
                                        speedup_to_target, summarize, write_json,
                                        write_markdown, write_report)

__all__ = ["accuracy_figure", "gradient_error_figure", "markdown_table", "plot_curves",
           "plot_gradient_error", "read_json", "speedup_to_target", "summarize", "write_json",
           "write_markdown", "write_report"]
