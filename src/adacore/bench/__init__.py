"""Benchmarks that compare side by side in one process (`adacore bench`).

Each name maps to ``"module:function"``; the function takes the remaining arguments.
"""

BENCHMARKS = {"facility": "adacore.bench.facility_location:main",
              "round": "adacore.bench.selection_round:main",
              "sparse": "adacore.bench.scaling:main_sparse",
              "scaling": "adacore.bench.scaling:main_scaling"}
