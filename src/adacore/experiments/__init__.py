"""Experiments: result summaries, Markdown tables, JSON records and plots of runs, and
the one-round diagnosis of every method."""

from adacore.experiments.diagnose import diagnose, write_diagnosis

from adacore.experiments.report import (accuracy_at_equal_wall_clock, accuracy_figure,
                                        gradient_error_figure, markdown_table, plot_curves,
                                        plot_gradient_error, read_json, speedup_to_target,
                                        summarize, time_to_accuracy_figure,
                                        time_to_full_accuracy, write_json, write_markdown,
                                        write_report)

__all__ = ["diagnose", "write_diagnosis", "accuracy_at_equal_wall_clock", "accuracy_figure",
           "gradient_error_figure", "markdown_table", "plot_curves", "plot_gradient_error",
           "read_json", "speedup_to_target", "summarize", "time_to_accuracy_figure",
           "time_to_full_accuracy", "write_json", "write_markdown", "write_report"]
