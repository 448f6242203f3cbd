"""Benchmarks and the GPU readiness check: one home, one command (`adacore bench NAME`).

Each name maps to ``"module:function"``; the function takes the remaining arguments and
returns None or an exit status. ``all`` runs :data:`ALL`, the side-by-side benchmarks;
``gpu`` (:mod:`adacore.bench.gpu_check`, the CUDA results against the CPU and against
float64 references, and one timed ResNet20 round) is run on its own.
"""

BENCHMARKS = {"facility": "adacore.bench.facility_location:main",
              "round": "adacore.bench.selection_round:main",
              "sparse": "adacore.bench.scaling:main_sparse",
              "scaling": "adacore.bench.scaling:main_scaling",
              "gpu": "adacore.bench.gpu_check:main"}
# what `adacore bench all` (and `make bench`) runs
ALL = ("facility", "round", "sparse", "scaling")
