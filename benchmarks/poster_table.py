"""The poster's imbalance table from `adacore compare` folders, one per R.

    python benchmarks/poster_table.py --runs 20=runs/final/imb_R20 10=runs/final/imb_R10 \
        5=runs/final/imb_R5

Each cell: test accuracy at best validation, mean ± std over seeds, with the share of the
training set ever selected in parentheses (the poster's format), then AdaCore minus the
method in points with the paired t-test's p-value, from each folder's results.json. A
method missing from a folder is taken from the first folder that has it when its runs do
not depend on R (rs2 reselects every epoch, full never selects), and marked so.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

INDEPENDENT_OF_R = {"rs2", "full"}


def cell(summary: dict, paired: dict | None) -> str:
    accuracy = summary["test_accuracy_at_best_val"]
    text = (f"{100 * accuracy['mean']:.1f} ± {100 * accuracy['std']:.1f} "
            f"({100 * summary['fraction_visited']['mean']:.0f}%)")
    if paired and paired.get("mean_diff") is not None:
        p = paired.get("p_value")
        text += f"; {100 * paired['mean_diff']:+.1f}" + ("" if p is None else f", p {p:.2g}")
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="R=FOLDER ...")
    args = parser.parse_args(argv)
    columns = []
    for item in args.runs:
        r, folder = item.split("=", 1)
        results = json.loads((Path(folder) / "results.json").read_text())
        columns.append((r, {row["method"]: row for row in results["summary"]},
                        results.get("paired", {})))
    methods = list(dict.fromkeys(m for _, summary, _ in columns for m in summary))
    lines = ["| method | " + " | ".join(f"R = {r}" for r, _, _ in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for method in methods:
        cells = []
        for _, summary, paired in columns:
            if method in summary:
                cells.append(cell(summary[method], paired.get(method)))
            elif method in INDEPENDENT_OF_R:
                donor = next(s for _, s, _ in columns if method in s)
                cells.append(cell(donor[method], None) + " (same runs: no R)")
            else:
                cells.append("-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
