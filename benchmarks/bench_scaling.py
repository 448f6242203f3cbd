"""Run `adacore.bench.scaling.main_scaling` (also: `adacore bench scaling`)."""

from adacore.bench.scaling import main_scaling

if __name__ == "__main__":
    main_scaling()
