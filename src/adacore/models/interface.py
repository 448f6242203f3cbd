"""The last-layer interface every adacore model implements.

Coreset strategies need, for each example, the gradient (and curvature) of the loss
with respect to the *last linear layer* only. A probe computes these in closed form
from two things: the penultimate features ``h`` (the input of the last linear layer)
and the logits ``classifier(h)``. So every model exposes exactly those two pieces:

- ``features(x) -> Tensor (n, D)``: the penultimate features;
- ``classifier: nn.Linear``: the last layer, ``D -> num_classes``;
- ``forward(x) == classifier(features(x))``.

Making your own model fit
-------------------------
Either subclass :class:`LastLayerModel`, put everything but the last layer in
``features`` and name the last layer ``classifier``::

    class MyNet(LastLayerModel):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU())
            self.classifier = nn.Linear(64, 10)

        def features(self, x):
            return self.body(x)

or wrap modules you already have, without copying their parameters::

    model = LastLayerWrapper(body, head)                # head an nn.Linear
    model = LastLayerWrapper.from_sequential(sequential)  # last entry an nn.Linear

A module that does not subclass :class:`LastLayerModel` but has a ``features``
method and a ``classifier`` attribute that is an ``nn.Linear`` works too
(duck typing). Wrappers from ``torch.nn.DataParallel``,
``torch.nn.parallel.DistributedDataParallel`` and ``torch.compile`` are looked through.

The helpers do not change the model's mode or the autograd mode: call ``model.eval()``
first for features that do not depend on the batch (batch norm), and wrap the call in
``torch.no_grad()`` when no graph is wanted.
"""

from __future__ import annotations

import abc

import torch
from torch import nn

from adacore.validation import InputError

__all__ = ["LastLayerModel", "LastLayerWrapper", "last_layer", "penultimate",
           "features_and_logits"]

_HOW_TO = ("subclass adacore.models.LastLayerModel (a `features(x)` method returning "
           "(n, D) and a `classifier` nn.Linear with D inputs), or wrap the model with "
           "adacore.models.LastLayerWrapper")


class LastLayerModel(nn.Module, abc.ABC):
    """Base class: a network split into penultimate ``features`` and a linear ``classifier``.

    Subclasses set ``self.classifier`` to an ``nn.Linear`` in ``__init__`` and
    implement :meth:`features`; :meth:`forward` is ``classifier(features(x))``.
    """

    classifier: nn.Linear

    @abc.abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, the input of :attr:`classifier`.

        Parameters
        ----------
        x : Tensor
            A batch of inputs, batch dimension first.

        Returns
        -------
        Tensor
            Shape ``(n, D)`` with ``D == classifier.in_features``.
        """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``classifier(features(x))``, shape ``(n, num_classes)``."""
        return self.classifier(self.features(x))

    @property
    def feature_dim(self) -> int:
        """``D``, the number of penultimate features."""
        return self.classifier.in_features

    @property
    def num_classes(self) -> int:
        """The number of outputs of the last layer."""
        return self.classifier.out_features


class LastLayerWrapper(LastLayerModel):
    """Join an existing feature extractor and last linear layer into a :class:`LastLayerModel`.

    The modules are registered as they are (parameters are shared, not copied).

    Parameters
    ----------
    body : nn.Module
        Maps a batch ``x`` to features of shape ``(n, D)``.
    classifier : nn.Linear
        The last layer, ``D -> num_classes``.
    """

    def __init__(self, body: nn.Module, classifier: nn.Linear):
        super().__init__()
        if not isinstance(body, nn.Module):
            raise InputError(f"body: got {type(body).__name__}, expected an nn.Module")
        if not isinstance(classifier, nn.Linear):
            raise InputError(f"classifier: got {type(classifier).__name__}, "
                             f"expected an nn.Linear")
        self.body = body
        self.classifier = classifier

    @classmethod
    def from_sequential(cls, sequential: nn.Sequential) -> "LastLayerWrapper":
        """Split an ``nn.Sequential`` whose last entry is an ``nn.Linear``.

        Parameters
        ----------
        sequential : nn.Sequential
            At least two entries, the last one an ``nn.Linear``.

        Returns
        -------
        LastLayerWrapper
            ``body`` is ``sequential[:-1]`` and ``classifier`` is ``sequential[-1]``;
            the result computes the same function with the same parameters.
        """
        if not isinstance(sequential, nn.Sequential) or len(sequential) < 2:
            raise InputError(f"sequential: got {type(sequential).__name__}, expected an "
                             f"nn.Sequential of at least two modules")
        if not isinstance(sequential[-1], nn.Linear):
            raise InputError(f"sequential: its last module is "
                             f"{type(sequential[-1]).__name__}, expected an nn.Linear")
        return cls(sequential[:-1], sequential[-1])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``body(x)``, shape ``(n, D)``."""
        return self.body(x)


def _unwrap(model: nn.Module) -> nn.Module:
    # DataParallel / DDP keep the user's module in `.module`, torch.compile in `._orig_mod`.
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _interface(model) -> nn.Module:
    """The module that implements the interface, or an InputError saying what is missing."""
    if not isinstance(model, nn.Module):
        raise InputError(f"model: got {type(model).__name__}, expected an nn.Module; "
                         + _HOW_TO)
    inner = _unwrap(model)
    name = type(inner).__name__
    if not callable(getattr(inner, "features", None)):
        raise InputError(f"model: {name} has no `features(x)` method; " + _HOW_TO)
    classifier = getattr(inner, "classifier", None)
    if not isinstance(classifier, nn.Linear):
        found = "no `classifier`" if classifier is None else \
            f"a `classifier` of type {type(classifier).__name__}"
        raise InputError(f"model: {name} has {found}, expected an nn.Linear last layer; "
                         + _HOW_TO)
    return inner


def last_layer(model: nn.Module) -> nn.Linear:
    """The last linear layer of a model that implements the interface.

    Parameters
    ----------
    model : nn.Module
        A :class:`LastLayerModel`, a module with the same two members, or such a module
        wrapped by ``DataParallel`` / ``DistributedDataParallel`` / ``torch.compile``.

    Returns
    -------
    nn.Linear
        ``model.classifier`` (the module itself, not a copy).

    Raises
    ------
    InputError
        If the model has no ``features`` method or no ``nn.Linear`` ``classifier``.
    """
    return _interface(model).classifier


def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features ``model.features(x)``, checked against the last layer.

    Parameters
    ----------
    model : nn.Module
        A model that implements the interface (see :func:`last_layer`).
    x : Tensor
        A batch of inputs on the model's device.

    Returns
    -------
    Tensor
        Shape ``(n, D)``, ``D == last_layer(model).in_features``. The model's mode and
        the autograd mode are left as the caller set them.

    Raises
    ------
    InputError
        If the model does not implement the interface, or ``features`` does not return
        a 2-D tensor with ``D`` columns.
    """
    return _checked_features(_interface(model), x)


def _checked_features(inner: nn.Module, x: torch.Tensor) -> torch.Tensor:
    hidden = inner.features(x)
    expected = inner.classifier.in_features
    if not isinstance(hidden, torch.Tensor) or hidden.ndim != 2 or hidden.shape[1] != expected:
        got = (f"shape {tuple(hidden.shape)}" if isinstance(hidden, torch.Tensor)
               else type(hidden).__name__)
        raise InputError(f"model: {type(inner).__name__}.features(x) returned {got}, "
                         f"expected shape (n, {expected}) to match its classifier")
    return hidden


def features_and_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features and logits from one pass through the network.

    Parameters
    ----------
    model : nn.Module
        A model that implements the interface (see :func:`last_layer`).
    x : Tensor
        A batch of inputs on the model's device.

    Returns
    -------
    (Tensor, Tensor)
        ``h`` of shape ``(n, D)`` and ``classifier(h)`` of shape ``(n, C)``; for a model
        that follows the interface the logits equal ``model(x)``.
    """
    inner = _interface(model)
    hidden = _checked_features(inner, x)
    return hidden, inner.classifier(hidden)
