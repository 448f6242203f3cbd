"""Benchmarks that compare side by side in one process (`adacore bench`)."""

BENCHMARKS = {"facility": "adacore.bench.facility_location",
              "round": "adacore.bench.selection_round"}
