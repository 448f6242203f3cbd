"""Demo for `adacore select`: last-layer gradients of a small classifier, three coresets.

Fits a softmax regression on scikit-learn's digits for a few epochs (a model part-way
through training, as when a coreset is reselected), writes the per-example logit-space
gradients p - y and Hessian diagonals p (1 - p) to .npy files, and runs
`adacore select` with AdaCore, CRAIG and Random at 5% on them.

    python examples/select_demo.py OUT_DIR
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

from adacore import softmax_ce_logit_terms


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(5):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        grads, diag = softmax_ce_logit_terms(model(x), y)
    np.save(out / "grads.npy", grads.numpy())
    np.save(out / "hessian.npy", diag.numpy())
    np.save(out / "labels.npy", y.numpy())
    print(f"wrote {out}/grads.npy, hessian.npy, labels.npy: n = {len(y)}, d = 10\n")
    for method in ("adacore", "craig", "random"):
        command = [sys.executable, "-m", "adacore.cli", "select", "--vectors",
                   str(out / "grads.npy"), "--labels", str(out / "labels.npy"),
                   "--fraction", "0.05", "--method", method,
                   "--out", str(out / f"{method}.npz")]
        if method == "adacore":
            command += ["--hessian", str(out / "hessian.npy")]
        print("$ adacore " + " ".join(command[3:]))
        subprocess.run(command, check=True)
        print()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo"))
