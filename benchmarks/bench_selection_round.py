"""Run `adacore.bench.selection_round` (also: `adacore bench round`)."""

from adacore.bench.selection_round import main

if __name__ == "__main__":
    main()
