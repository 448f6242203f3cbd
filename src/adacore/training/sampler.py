"""A ``torch.utils.data.Sampler`` over the current coreset of any map-style Dataset.

For data that does not fit in one tensor (files read per item, augmentations in
DataLoader workers), the sampler keeps the selection and the DataLoader keeps the I/O:

    sampler = CoresetSampler(train_set, get_strategy("adacore", fraction=0.1), select_every=5)
    loader = DataLoader(sampler.dataset, batch_size=32, sampler=sampler, num_workers=2)
    for epoch in range(epochs):
        sampler.select(model, epoch, steps=5 * len(loader))  # optimizer steps since the last
        for x, y, w in loader:
            loss = (w * F.cross_entropy(model(x), y, reduction="none")).mean()
            optimizer.zero_grad(); loss.backward(); optimizer.step()

``train_set[i]`` must be an ``(x, y)`` pair with an integer class label ``y``;
``sampler.dataset[i]`` is ``(x, y, w)``, ``w`` the example's coreset weight; the model's
output must be the logits of softmax cross-entropy (probed in closed form, as
:mod:`adacore.curvature` derives them).
"""

from __future__ import annotations

import numbers
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from adacore.coreset import Coreset
from adacore.curvature import softmax_ce_last_layer_terms, softmax_ce_logit_terms
from adacore.strategies.base import Strategy
from adacore.validation import InputError, check_choice, check_int, check_real

__all__ = ["CoresetSampler", "WeightedDataset"]

SAMPLER_SPACES = ("auto", "logits", "last_layer")


def _checked_pair(item, index: int):
    """``(x, y)`` with ``y`` an int64 scalar tensor, or an InputError naming the item."""
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        kind = (f"a {type(item).__name__} of length {len(item)}"
                if isinstance(item, (tuple, list)) else f"a {type(item).__name__}")
        raise InputError(f"dataset[{index}]: got {kind}, expected an (x, y) pair with an "
                         f"integer class label y")
    x, y = item
    if isinstance(y, torch.Tensor) and y.numel() == 1 and not y.is_floating_point() \
            and not y.is_complex() and y.dtype != torch.bool:
        label = int(y.reshape(()))
    elif isinstance(y, (numbers.Integral, np.integer)) and not isinstance(y, (bool, np.bool_)):
        label = int(y)
    else:
        shown = (f"a tensor of shape {tuple(y.shape)} and dtype {y.dtype}"
                 if isinstance(y, torch.Tensor) else repr(y)[:40])
        raise InputError(f"dataset[{index}]: label y is {shown}, expected an integer class "
                         f"label (int, NumPy integer or one-element integer tensor)")
    return x, torch.tensor(label, dtype=torch.int64)


class _CheckedPairs(Dataset):
    """The user's dataset with every item checked to be ``(x, integer y)``."""

    def __init__(self, dataset):
        self.source = dataset

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index):
        return _checked_pair(self.source[index], index)


class WeightedDataset(Dataset):
    """Item i is ``(x, y, w)``: the source's ``(x, y)`` and the example's coreset weight.

    ``weights`` is a float32 tensor of one weight per example, in shared memory and
    updated in place by :meth:`CoresetSampler.select`, so DataLoader workers read the
    current round's weights. Weights are the coreset's, rescaled to mean 1 over the
    coreset; an example not in the coreset has weight 0 (the sampler never yields it).
    """

    def __init__(self, dataset):
        self.source = dataset
        self.weights = torch.zeros(len(dataset), dtype=torch.float32).share_memory_()

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index):
        x, y = _checked_pair(self.source[index], index)
        return x, y, self.weights[index].clone()


def _dataset_length(name: str, dataset) -> int:
    try:
        n = len(dataset)
    except TypeError as error:
        raise InputError(f"{name}: got {type(dataset).__name__}, expected a map-style "
                         f"Dataset (with __len__ and __getitem__)") from error
    if n == 0:
        raise InputError(f"{name}: got an empty dataset, expected at least one (x, y) item")
    _checked_pair(dataset[0], 0)
    return n


def _find_last_linear(model: nn.Module, name) -> nn.Linear:
    if name is None:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise InputError(f"model: {type(model).__name__} has no nn.Linear module; space "
                             f"'last_layer' probes the input of the last nn.Linear (or use "
                             f"space='logits')")
        return linears[-1]
    if isinstance(name, nn.Module):
        layer = name
    else:
        modules = dict(model.named_modules())
        if name not in modules:
            raise InputError(f"last_layer: got {name!r}, expected the name of a module of "
                             f"the model (one of model.named_modules())")
        layer = modules[name]
    if not isinstance(layer, nn.Linear):
        raise InputError(f"last_layer: got a {type(layer).__name__}, expected an nn.Linear")
    return layer


class CoresetSampler(Sampler):
    """Yields the current coreset's dataset indices, in a fresh seeded order each epoch.

    Build the DataLoader on :attr:`dataset` (items ``(x, y, w)``) with this sampler,
    and call :meth:`select` at the start of every epoch, *before* iterating the
    DataLoader (``for ... in loader`` creates the workers and reads the weights then).
    The weights live in shared memory and are updated in place, so workers forked per
    epoch (the default) and ``persistent_workers=True`` both see the current round.

    Parameters
    ----------
    dataset : map-style Dataset
        Item i is ``(x, y)``, ``y`` an integer class label; any transform it applies
        (augmentation) runs in the DataLoader workers as usual.
    strategy : Strategy
        Any registered strategy (``adacore.get_strategy``) but those that prune by
        training loss (InfoBatch): they need :class:`~adacore.training.CoresetLoader`.
    select_every : int
        R: reselect at epoch 0 and then at every epoch divisible by R (a strategy with
        a schedule of its own, RS2, overrides it).
    seed : int
        Seed of the batch order: epoch e's order is drawn from ``(seed, e)``.
    batch_size_probe : int
        Examples per forward pass of the probe.
    num_workers : int
        DataLoader workers of the probe.
    probe_dataset : map-style Dataset, optional
        The same examples in the same order, without augmentation, for the probe (e.g.
        the training set built with the evaluation transform). Default: ``dataset``.
    last_layer : str or nn.Linear, optional
        For space "last_layer": the layer whose input and output are probed (a name
        from ``model.named_modules()``, or the module). Default: the last ``nn.Linear``
        in ``model.modules()`` order. Its output must be the model's output (the
        logits); a model that transforms it afterwards is refused.
    space : {"auto", "logits", "last_layer"}
        Gradient space of the probe; "auto" takes ``strategy.preferred_space``. The
        model's output must be the logits fed to softmax cross-entropy.
    val_dataset : map-style Dataset, optional
        ``(x, y)`` validation items, for strategies that select against validation
        gradients (GLISTER); required by them.
    device : optional
        Where probe batches go (default: the model's device).

    Attributes
    ----------
    coreset_ : Coreset or None
        The current coreset (indices into ``dataset``).
    epoch_ : int or None
        The epoch of the last :meth:`select` call; the batch order is drawn from it.
    """

    def __init__(self, dataset, strategy: Strategy, *, select_every: int = 1, seed: int = 0,
                 batch_size_probe: int = 256, num_workers: int = 0, probe_dataset=None,
                 last_layer=None, space: str = "auto", val_dataset=None, device=None,
                 max_weight: float | None = None):
        self.n = _dataset_length("dataset", dataset)
        self.max_weight = (None if max_weight is None
                           else check_real("max_weight", max_weight, low=1))
        if not isinstance(strategy, Strategy):
            raise InputError(f"strategy: got {type(strategy).__name__}, expected a Strategy "
                             f"(e.g. adacore.get_strategy('craig', fraction=0.1))")
        if "losses" in strategy.requires:
            raise InputError(f"strategy: method {strategy.name!r} prunes by each example's "
                             f"training loss, which a DataLoader over CoresetSampler does not "
                             f"hand back (its batches carry no row numbers); use "
                             f"adacore.training.CoresetLoader and loader.record_losses(losses)")
        self.strategy = strategy
        self.select_every = check_int("select_every", select_every, 1)
        if strategy.reselect_every is not None:
            self.select_every = strategy.reselect_every
        self.seed = check_int("seed", seed, 0)
        self.batch_size_probe = check_int("batch_size_probe", batch_size_probe, 1)
        self.num_workers = check_int("num_workers", num_workers, 0)
        if probe_dataset is not None and _dataset_length("probe_dataset", probe_dataset) \
                != self.n:
            raise InputError(f"probe_dataset: got {len(probe_dataset)} items, expected "
                             f"{self.n} (the examples of dataset, in the same order)")
        self.probe_dataset = dataset if probe_dataset is None else probe_dataset
        self.last_layer = last_layer
        self.space = check_choice("space", space, SAMPLER_SPACES)
        if self.space == "auto":
            self.space = strategy.preferred_space
        if self.space not in ("logits", "last_layer"):
            raise InputError(f"space: strategy {strategy.name!r} prefers {self.space!r}; "
                             f"the sampler probes 'logits' or 'last_layer', pass one")
        if "val_grads" in strategy.requires:
            if val_dataset is None:
                raise InputError(f"val_dataset: method {strategy.name!r} selects against "
                                 f"validation gradients; pass a Dataset of (x, y) items")
            _dataset_length("val_dataset", val_dataset)
        self.val_dataset = val_dataset
        self.device = device
        self.dataset = WeightedDataset(dataset)
        self.coreset_: Coreset | None = None
        self.epoch_: int | None = None
        self.selected_epoch_: int | None = None
        self.last_selection_: dict | None = None

    # -- the Sampler protocol ---------------------------------------------------------

    def _require_coreset(self) -> Coreset:
        if self.coreset_ is None:
            raise InputError("CoresetSampler: no coreset yet; call sampler.select(model, "
                             "epoch) at the start of every epoch, before iterating")
        return self.coreset_

    def __len__(self) -> int:
        """The current coreset's size (0 before the first :meth:`select`, whereas
        iterating then raises)."""
        return 0 if self.coreset_ is None else len(self.coreset_)

    def __iter__(self):
        coreset = self._require_coreset()
        order = np.random.default_rng([self.seed, self.epoch_]).permutation(len(coreset))
        return iter(coreset.indices[order].tolist())

    # -- selection --------------------------------------------------------------------

    def due(self, epoch: int) -> bool:
        """Whether :meth:`select` at ``epoch`` runs a selection round."""
        if self.coreset_ is None:
            return True
        return epoch % self.select_every == 0 and epoch != self.selected_epoch_

    def select(self, model: nn.Module, epoch: int, *, steps: float | None = None) -> bool:
        """Start ``epoch``: reselect when a round is due; return whether it selected.

        Parameters
        ----------
        model : nn.Module
            Its output on a batch of inputs must be the (batch, classes) logits.
        epoch : int
            The epoch about to start (0 first); also seeds this epoch's batch order.
        steps : float, optional
            Optimizer steps taken since the previous round, passed to strategies whose
            state decays in training time (AdaCore's smoothing, ``strategy.uses_steps``).
            The sampler does not see the batch size, so it cannot count them: pass
            ``select_every * len(loader)`` (evaluated before this call, ``len(loader)``
            is the number of batches of the previous coreset; 0 at epoch 0, where the
            first round ignores it). None: the strategy's default (one step per round).
        """
        self.epoch_ = check_int("epoch", epoch, 0)
        if not self.due(self.epoch_):
            return False
        start = time.perf_counter()
        inputs: dict = {}
        grads = None
        labels = None
        if "grads" in self.strategy.requires:
            wants_diag = "hessian_diag" in self.strategy.requires
            grads, diag, labels = self._probe(model, self.probe_dataset, "dataset",
                                              wants_diag)
            if wants_diag:
                inputs["hessian_diag"] = diag
        if "val_grads" in self.strategy.requires:
            val_grads, val_diag, val_labels = self._probe(model, self.val_dataset,
                                                          "val_dataset", True)
            inputs.update(val_grads=val_grads, val_hessian_diag=val_diag)
            if "val_labels" in self.strategy.requires:
                inputs["val_labels"] = val_labels.numpy()
        if labels is None:
            labels = self._labels()
        if self.strategy.uses_steps and steps is not None:
            inputs["steps"] = steps
        coreset = self.strategy.select(grads, labels.numpy(), **inputs)
        if len(coreset) == 0:
            raise InputError(f"method {self.strategy.name!r} selected no example this round; "
                             f"nothing to train on")
        weights = torch.zeros(self.n, dtype=torch.float32)
        weights[torch.from_numpy(coreset.indices)] = torch.from_numpy(
            coreset.normalized_weights(self.max_weight)).float()
        self.dataset.weights.copy_(weights)
        self.coreset_ = coreset
        self.selected_epoch_ = self.epoch_
        self.last_selection_ = {"epoch": self.epoch_,
                                "select_seconds": time.perf_counter() - start}
        return True

    def _labels(self) -> torch.Tensor:
        """Labels alone, for strategies that need no vectors (random, RS2, full)."""
        loader = DataLoader(_CheckedPairs(self.probe_dataset), batch_size=self.batch_size_probe,
                            shuffle=False, num_workers=self.num_workers)
        return torch.cat([y for _, y in loader])

    def _probe(self, model: nn.Module, dataset, name: str, with_diag: bool):
        """(grads, hessian_diag or None, labels) over ``dataset``, on the CPU, float32."""
        if not isinstance(model, nn.Module):
            raise InputError(f"model: got {type(model).__name__}, expected an nn.Module")
        parameter = next(model.parameters(), None)
        device = self.device or (parameter.device if parameter is not None else "cpu")
        layer = _find_last_linear(model, self.last_layer) if self.space == "last_layer" \
            else None
        captured = {}

        def hook(module, args, output):
            captured["features"], captured["output"] = args[0], output

        loader = DataLoader(_CheckedPairs(dataset), batch_size=self.batch_size_probe,
                            shuffle=False, num_workers=self.num_workers)
        n = len(dataset)
        grads_out = diag_out = None
        labels_out = torch.empty(n, dtype=torch.int64)
        modes = [(module, module.training) for module in model.modules()]
        handle = layer.register_forward_hook(hook) if layer is not None else None
        model.eval()
        try:
            begin = 0
            for x, y in loader:
                stop = begin + y.shape[0]
                with torch.no_grad():
                    captured.clear()
                    logits = model(x.to(device))
                    batch_labels = y.to(device)
                    grads, diag = self._terms(model, layer, logits, batch_labels, captured,
                                              name)
                if grads_out is None:
                    grads_out = torch.empty((n, grads.shape[1]), dtype=torch.float32)
                    if with_diag:
                        diag_out = torch.empty((n, grads.shape[1]), dtype=torch.float32)
                grads_out[begin:stop] = grads.float().cpu()
                if diag_out is not None:
                    diag_out[begin:stop] = diag.float().cpu()
                labels_out[begin:stop] = y
                begin = stop
        finally:
            if handle is not None:
                handle.remove()
            for module, training in modes:
                module.training = training
        return grads_out, diag_out, labels_out

    def _terms(self, model, layer, logits, labels, captured, name):
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 \
                or logits.shape[0] != labels.shape[0]:
            got = (f"shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor)
                   else f"a {type(logits).__name__}")
            raise InputError(f"model: returned {got} for a batch of {labels.shape[0]} "
                             f"inputs, expected logits of shape ({labels.shape[0]}, classes)")
        classes = logits.shape[1]
        if int(labels.min()) < 0 or int(labels.max()) >= classes:
            raise InputError(f"{name}: labels in [{int(labels.min())}, {int(labels.max())}], "
                             f"expected values in [0, {classes - 1}] for a model with "
                             f"{classes} outputs")
        if layer is None:
            return softmax_ce_logit_terms(logits, labels)
        output = captured.get("output")
        if output is None:
            raise InputError(f"last_layer: the {type(layer).__name__} probed was not called "
                             f"in the model's forward; name the last layer with last_layer=")
        if output is not logits and not (isinstance(output, torch.Tensor)
                                         and output.shape == logits.shape
                                         and torch.equal(output, logits)):
            raise InputError(f"last_layer: the output of the probed nn.Linear ({layer}) is "
                             f"not the model's output ({type(model).__name__} transforms it "
                             f"afterwards), so its last-layer gradients would be wrong; "
                             f"make the model return the Linear's logits, name the right "
                             f"layer with last_layer=, or use space='logits'")
        features = captured["features"]
        return softmax_ce_last_layer_terms(logits, labels, features,
                                           bias=layer.bias is not None)
