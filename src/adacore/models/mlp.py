"""Fully connected networks: ``MLP`` (and, with no hidden layers, a linear model)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adacore.models.initialization import init_hidden_linear_
from adacore.models.interface import LastLayerModel
from adacore.validation import InputError, check_choice, check_int, fail

__all__ = ["MLP", "ACTIVATIONS"]

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


class MLP(LastLayerModel):
    """A multi-layer perceptron; inputs are flattened after the batch dimension.

    Parameters
    ----------
    in_features : int
        Number of input values per example (784 for MNIST).
    hidden : sequence of int
        Widths of the hidden layers. ``()`` gives a linear (softmax-regression) model
        whose features are the flattened inputs.
    num_classes : int
        Number of outputs.
    activation : str
        One of ``"relu"``, ``"leaky_relu"``, ``"gelu"``, ``"tanh"``, ``"sigmoid"``.

    Notes
    -----
    ``features(x)`` is the output of the last hidden activation, shape
    ``(n, hidden[-1])`` (``(n, in_features)`` with no hidden layers).
    """

    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (100,),
                 num_classes: int = 10, activation: str = "relu"):
        super().__init__()
        self.in_features = check_int("in_features", in_features, 1)
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise fail("hidden", hidden, "a sequence of layer widths, e.g. (100,)")
        widths = [check_int(f"hidden[{i}]", width, 1) for i, width in enumerate(hidden)]
        num_classes = check_int("num_classes", num_classes, 1)
        self.activation = check_choice("activation", activation, ACTIVATIONS)
        self.hidden = tuple(widths)

        layers: list[nn.Module] = [nn.Flatten(start_dim=1)]
        width_in = self.in_features
        for width in widths:
            linear = nn.Linear(width_in, width)
            init_hidden_linear_(linear, activation)
            layers += [linear, ACTIVATIONS[activation]()]
            width_in = width
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(width_in, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last hidden activations.

        Parameters
        ----------
        x : Tensor
            Shape ``(n, in_features)`` or ``(n, ...)`` with ``in_features`` values
            after the batch dimension.

        Returns
        -------
        Tensor
            Shape ``(n, D)``, ``D = hidden[-1]`` (or ``in_features``).
        """
        if x.ndim < 2 or x[0].numel() != self.in_features:
            raise InputError(f"x: got a batch of shape {tuple(x.shape)}, expected "
                             f"(n, {self.in_features}) or (n, ...) with "
                             f"{self.in_features} values per example")
        return self.body(x)
