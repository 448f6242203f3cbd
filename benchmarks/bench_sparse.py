"""Run `adacore.bench.scaling.main_sparse` (also: `adacore bench sparse`)."""

from adacore.bench.scaling import main_sparse

if __name__ == "__main__":
    main_sparse()
