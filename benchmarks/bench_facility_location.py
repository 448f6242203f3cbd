"""Run `adacore.bench.facility_location` (also: `adacore bench facility`)."""

from adacore.bench.facility_location import main

if __name__ == "__main__":
    main()
