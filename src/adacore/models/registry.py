"""Models by name: ``build_model("resnet18", num_classes=10, input_shape=(3, 32, 32))``.

Each entry knows its constructor and how to read the constructor's input arguments
(``in_features``, ``in_channels``, ``image_size``) from the per-example input shape, so
callers (the command line, experiment configs) never special-case a model.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from adacore.models.interface import LastLayerModel, last_layer
from adacore.models.lenet import LeNet5
from adacore.models.mlp import MLP
from adacore.models.resnet import ResNet18, ResNet20, cifar_resnet
from adacore.validation import InputError, check_int, fail

__all__ = ["build_model", "register_model", "available_models", "ModelSpec"]


def _flat(name: str, shape: tuple[int, ...]) -> dict[str, Any]:
    return {"in_features": math.prod(shape)}


def _image(name: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 3:
        return shape
    raise fail("input_shape", shape, f"(channels, height, width) or (height, width) for "
                                     f"{name!r}; flat rows such as (784,) need the image "
                                     f"shape, e.g. (1, 28, 28)")


def _lenet_shape(name: str, shape: tuple[int, ...]) -> dict[str, Any]:
    channels, height, width = _image(name, shape)
    return {"in_channels": channels, "image_size": (height, width)}


def _channels(name: str, shape: tuple[int, ...]) -> dict[str, Any]:
    return {"in_channels": _image(name, shape)[0]}


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry.

    Parameters
    ----------
    constructor : callable
        Called with ``num_classes=``, the keywords from ``from_shape`` and ``fixed``,
        and the caller's options; returns a :class:`LastLayerModel`.
    from_shape : callable
        ``(name, input_shape) -> dict`` of constructor keywords read from the
        per-example input shape.
    fixed : dict
        Keywords that define this entry (``{"depth": 32}``), not overridable.
    """

    constructor: Callable[..., LastLayerModel]
    from_shape: Callable[[str, tuple[int, ...]], dict[str, Any]]
    fixed: dict[str, Any] = field(default_factory=dict)

    def options(self) -> set[str]:
        """Keywords a caller may pass through :func:`build_model`."""
        parameters = inspect.signature(self.constructor).parameters
        taken = set(self.fixed) | {"num_classes", "in_features", "in_channels",
                                   "image_size"}
        return {name for name, parameter in parameters.items()
                if name not in taken and parameter.kind in (parameter.KEYWORD_ONLY,
                                                            parameter.POSITIONAL_OR_KEYWORD)}


_REGISTRY: dict[str, ModelSpec] = {
    "mlp": ModelSpec(MLP, _flat),
    "linear": ModelSpec(MLP, _flat, {"hidden": ()}),
    "lenet": ModelSpec(LeNet5, _lenet_shape),
    "resnet18": ModelSpec(ResNet18, _channels),
    "resnet20": ModelSpec(ResNet20, _channels),
    **{f"resnet{depth}": ModelSpec(cifar_resnet, _channels, {"depth": depth})
       for depth in (32, 44, 56, 110)},
}


def takes_images(name: str) -> bool:
    """Whether model ``name`` reads its input shape as an image (channels, height,
    width): a dataset for it is loaded in its image layout, not as flat rows. False for
    a name not registered (:func:`build_model` refuses it, naming the choices)."""
    spec = _REGISTRY.get(name) if isinstance(name, str) else None
    return spec is not None and spec.from_shape is not _flat


def available_models() -> list[str]:
    """Registered model names, sorted.

    Returns
    -------
    list of str
        The names :func:`build_model` accepts.
    """
    return sorted(_REGISTRY)


def register_model(name: str, spec: ModelSpec) -> None:
    """Add a model to the registry, e.g. a user's own :class:`LastLayerModel`.

    Parameters
    ----------
    name : str
        A new, lower-case name.
    spec : ModelSpec
        How to build it.
    """
    if not isinstance(name, str) or not name or name != name.lower():
        raise fail("name", name, "a non-empty lower-case string")
    if name in _REGISTRY:
        raise fail("name", name, "a name not yet registered (taken: "
                                 + ", ".join(available_models()) + ")")
    if not isinstance(spec, ModelSpec):
        raise InputError(f"spec: got {type(spec).__name__}, expected a ModelSpec")
    _REGISTRY[name] = spec


def _check_shape(input_shape) -> tuple[int, ...]:
    expected = "a non-empty tuple of positive ints, the shape of one example, e.g. (3, 32, 32)"
    if isinstance(input_shape, torch.Size):
        input_shape = tuple(input_shape)
    if not isinstance(input_shape, (tuple, list)) or not input_shape:
        raise fail("input_shape", input_shape, expected)
    try:
        return tuple(check_int("input_shape", side, 1) for side in input_shape)
    except InputError:
        raise fail("input_shape", input_shape, expected) from None


def build_model(name: str, *, num_classes: int, input_shape, seed: int | None = None,
                device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                **options) -> LastLayerModel:
    """Build a registered model for inputs of a given shape.

    Parameters
    ----------
    name : str
        One of :func:`available_models`: ``"mlp"``, ``"linear"``, ``"lenet"``,
        ``"resnet20"``, ``"resnet32"``, ``"resnet44"``, ``"resnet56"``,
        ``"resnet110"``, ``"resnet18"``.
    num_classes : int
        Number of outputs.
    input_shape : tuple of int
        Shape of one example without the batch dimension: ``(784,)`` or ``(1, 28, 28)``
        for an MLP, ``(C, H, W)`` (or ``(H, W)`` for one channel) for the
        convolutional models.
    seed : int, optional
        Seeds the initial weights (the global torch generator's state is restored
        afterwards); the same seed gives the same weights, bit for bit.
        ``None`` draws from the global generator.
    device, dtype : optional
        Where to put the parameters and in which floating dtype (default: CPU, float32).
    **options
        Passed to the constructor, e.g. ``hidden=(256, 128)`` or ``activation="tanh"``
        for ``"mlp"``, ``shortcut="B"`` for the CIFAR ResNets.

    Returns
    -------
    LastLayerModel
        In training mode.

    Raises
    ------
    InputError
        For an unknown name (the message lists the choices), a shape the model cannot
        take, an option the model does not have, or a bad seed or dtype.
    """
    if name not in _REGISTRY:
        raise fail("name", name, "one of " + ", ".join(repr(n) for n in available_models()))
    spec = _REGISTRY[name]
    num_classes = check_int("num_classes", num_classes, 1)
    shape = _check_shape(input_shape)
    unknown = sorted(set(options) - spec.options())
    if unknown:
        allowed = ", ".join(sorted(spec.options())) or "none"
        raise InputError(f"options: {name!r} does not take {', '.join(unknown)} "
                         f"(it takes: {allowed})")
    if seed is not None:
        seed = check_int("seed", seed, 0)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise fail("dtype", dtype, "a floating torch dtype such as torch.float32")

    kwargs = {**options, **spec.from_shape(name, shape), **spec.fixed,
              "num_classes": num_classes}
    if seed is None:
        model = spec.constructor(**kwargs)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = spec.constructor(**kwargs)
    last_layer(model)  # a registered user constructor must honour the interface too
    return model.to(device=device, dtype=dtype)
