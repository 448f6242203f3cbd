"""The probe's forward pass on the CPU: techniques side by side, against a full epoch.

    python benchmarks/probe_speed.py [--repeats 5] [--threads 2] [--models lenet mlp]
                                     [--compile]

MNIST 50,000 training images; LeNet-5 on (n, 1, 28, 28), the MLP 784-100-10 on
(n, 784). Both are trained for one epoch first (SGD, batch 128, as in ``adacore bench
round``), then every case below and one more full epoch run in one process,
interleaved, ``--repeats`` times; the table gives median seconds. Two baselines:

- *forward* rows time the network alone (``features`` then ``classifier`` over all
  rows, under ``torch.no_grad()`` unless said); their ratio is to the plain forward
  at batch 512. Techniques that build a copy of the model (channels_last, traces,
  oneDNN modules) count the building in every repeat: the weights change between
  selection rounds, so a round must build its copy again.
- *probe* rows time a whole logit-space probe with the closed-form Hessian diagonal
  (what an AdaCore round asks for); their ratio is to the probe as it was before the
  traced forward (an eager forward, the closed forms of :mod:`adacore.curvature`, one
  copy into the outputs), reproduced here as ``reference_probe``. ``last_layer``
  rows do the same in the last layer's space (n x 1,010 numbers for the MLP).

``--compile`` adds torch.compile (inductor; needs a C++ compiler), whose first call
compiles for tens of seconds; the row times later calls and its note gives that first
call's seconds.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch
from torch import nn

from adacore.bench.selection_round import full_epoch
from adacore.curvature import softmax_ce_last_layer_terms, softmax_ce_logit_terms
from adacore.data import load_dataset
from adacore.models import build_model, features_and_logits
from adacore.probe import probe

EPOCH = "full epoch (SGD, batch 128)"


def reference_probe(model, x, y, space="logits", batch_size=512):
    """The probe's closed-form path before the traced forward: the baseline of the
    probe rows (eager forward, adacore.curvature's terms, then a copy into the output)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    width = model.classifier.in_features
    dim = 10 if space == "logits" else 10 * width + 10
    grads = torch.empty((len(x), dim))
    diag = torch.empty((len(x), dim))
    try:
        for begin in range(0, len(x), batch_size):
            stop = begin + batch_size
            labels = y[begin:stop]
            with torch.no_grad():
                features, logits = features_and_logits(model, x[begin:stop])
            if space == "logits":
                g, d = softmax_ce_logit_terms(logits, labels)
            else:
                g, d = softmax_ce_last_layer_terms(logits, labels, features)
            grads[begin:stop] = g
            diag[begin:stop] = d
    finally:
        for module, training in modes:
            module.training = training
    return grads, diag


class Features(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.features(x)


def forward_all(features, classifier, x, batch_size, context=torch.no_grad, convert=None):
    with context():
        for begin in range(0, len(x), batch_size):
            batch = x[begin:begin + batch_size]
            classifier(features(batch if convert is None else convert(batch)))


def jit_copy(model, x, optimize):
    """A frozen trace of the model's features (optimised for inference when asked)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")          # torch.jit's deprecation notices
        module = Features(model)
        module.training = False
        frozen = torch.jit.freeze(torch.jit.trace(module, x[-8:], check_trace=False))
        return torch.jit.optimize_for_inference(frozen) if optimize else frozen


def in_eval(model, run):
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        run()
    finally:
        for module, training in modes:
            module.training = training


def cases_for(model, x, y, args) -> dict:
    """name -> (baseline name, callable) of every timed case but the epoch."""
    plain = "forward, plain (no_grad), batch 512"
    old = "probe logits, before (eager, curvature terms), batch 512"
    old_last = "probe last_layer, before, batch 512"
    classifier = model.classifier
    cases = {}
    for batch in (256, 512, 1024, 2048, 4096, 8192):
        cases[f"forward, plain (no_grad), batch {batch}"] = (plain, lambda b=batch: in_eval(
            model, lambda: forward_all(model.features, classifier, x, b)))
    cases["forward, inference_mode, batch 512"] = (plain, lambda: in_eval(
        model, lambda: forward_all(model.features, classifier, x, 512, torch.inference_mode)))
    if x.ndim == 4:
        def channels_last():
            cl = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
            forward_all(cl.features, cl.classifier, x, 512,
                        convert=lambda b: b.contiguous(memory_format=torch.channels_last))
        cases["forward, channels_last copy, batch 512"] = (plain, channels_last)

        def to_mkldnn():
            from torch.utils import mkldnn
            converted = mkldnn.to_mkldnn(copy.deepcopy(model).eval())
            forward_all(converted.features, classifier, x, 512)
        cases["forward, torch.utils.mkldnn.to_mkldnn copy, batch 512"] = (plain, to_mkldnn)
    cases["forward, jit.trace + freeze, batch 512"] = (plain, lambda: in_eval(
        model, lambda: forward_all(jit_copy(model, x, False), classifier, x, 512)))
    for batch in (256, 512):
        cases[f"forward, jit.trace + freeze + optimize_for_inference, batch {batch}"] = (
            plain, lambda b=batch: in_eval(
                model, lambda: forward_all(jit_copy(model, x, True), classifier, x, b)))
    if args.compile:
        compiled = torch.compile(model.features)
        start = time.perf_counter()
        in_eval(model, lambda: forward_all(compiled, classifier, x[:512], 512))
        first = time.perf_counter() - start
        cases[f"forward, torch.compile, batch 512 (first call {first:.0f} s, not counted)"] = (
            plain, lambda: in_eval(model, lambda: forward_all(compiled, classifier, x, 512)))
    cases[old] = (old, lambda: reference_probe(model, x, y))
    for forward in ("eager", "auto"):
        for batch in (512, 1024):
            cases[f"probe logits, forward={forward!r}, batch {batch}"] = (
                old, lambda f=forward, b=batch: probe(model, x, y, batch_size=b, forward=f))
    if args.last_layer:
        cases[old_last] = (old_last, lambda: reference_probe(model, x, y, "last_layer"))
        cases["probe last_layer, forward='auto', batch 512"] = (
            old_last, lambda: probe(model, x, y, space="last_layer", batch_size=512))
    return cases


def measure(name, args) -> list[str]:
    splits = load_dataset("mnist")
    x, y = splits.train.x[:args.n], splits.train.y[:args.n]
    if name == "lenet":
        x = x.reshape(len(x), 1, 28, 28)
    model = build_model(name, num_classes=10, input_shape=tuple(x.shape[1:]), seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    full_epoch(model, optimizer, x, y, generator)      # warm-up and a trained model
    cases = {EPOCH: (EPOCH, lambda: full_epoch(model, optimizer, x, y, generator)),
             **cases_for(model, x, y, args)}
    times = {case: [] for case in cases}
    for _ in range(args.repeats):
        for case, (_, run) in cases.items():
            start = time.perf_counter()
            run()
            times[case].append(time.perf_counter() - start)
    medians = {case: statistics.median(values) for case, values in times.items()}
    used = probe(model, x, y, batch_size=512).forward
    shape = "LeNet-5, x (n, 1, 28, 28)" if name == "lenet" else "MLP 784-100-10, x (n, 784)"
    lines = [f"\n{shape}; MNIST n = {len(x):,}; median of {args.repeats}; torch threads "
             f"{torch.get_num_threads()}; probe(forward='auto') ran {used!r}\n",
             "| technique | seconds | speed-up over its baseline | / full epoch |",
             "|---|---:|---:|---:|"]
    for case, (baseline, _) in cases.items():
        speedup = "-" if case == EPOCH else f"{medians[baseline] / medians[case]:.2f}x"
        lines.append(f"| {case} | {medians[case]:.2f} | {speedup} | "
                     f"{medians[case] / medians[EPOCH]:.2f} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=("lenet", "mlp"),
                        default=["lenet", "mlp"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, default=50_000, help="training rows used")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--no-last-layer", dest="last_layer", action="store_false",
                        help="leave out the last-layer-space probe rows")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.models:
        print("\n".join(measure(name, args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
