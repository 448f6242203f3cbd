"""The records every loader returns: a labelled :class:`Dataset` and its :class:`Splits`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from adacore.validation import InputError, fail


@dataclass(frozen=True)
class Dataset:
    """A labelled set of examples held as tensors.

    Attributes
    ----------
    x : torch.Tensor
        Examples, first dimension ``n`` (float32 for every loader here).
    y : torch.Tensor
        int64 class labels, shape ``(n,)``, each in ``[0, num_classes)``.
    num_classes : int
        Number of classes of the task (a class may have no examples in a subset).
    name : str
        Human-readable name, e.g. ``"mnist"`` or ``"cifar10-imbalanced-100"``.
    """

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or self.x.ndim < 1:
            raise fail("x", self.x, "a tensor with at least one dimension")
        if not isinstance(self.y, torch.Tensor) or self.y.ndim != 1 \
                or self.y.dtype != torch.int64:
            raise fail("y", self.y, "a 1-D int64 tensor of labels")
        if self.x.shape[0] != self.y.shape[0]:
            raise InputError(f"x, y: got {self.x.shape[0]} examples and {self.y.shape[0]} "
                             f"labels, expected one label per example")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                or self.num_classes < 1:
            raise fail("num_classes", self.num_classes, "an int >= 1")
        if self.y.numel() and (int(self.y.min()) < 0 or int(self.y.max()) >= self.num_classes):
            raise fail("y", self.y, f"labels in [0, {self.num_classes})")
        if not isinstance(self.name, str):
            raise fail("name", self.name, "a string")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: torch.Tensor, *, name: str | None = None) -> "Dataset":
        """The examples at ``indices`` (an int64 tensor), in that order.

        Parameters
        ----------
        indices : torch.Tensor
            Positions into this dataset.
        name : str, optional
            Name of the subset; this dataset's name when omitted.

        Returns
        -------
        Dataset
        """
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return Dataset(self.x[indices], self.y[indices], self.num_classes,
                       self.name if name is None else name)

    def class_counts(self) -> torch.Tensor:
        """Number of examples of each class, an int64 tensor of length ``num_classes``."""
        return torch.bincount(self.y, minlength=self.num_classes)


@dataclass(frozen=True)
class Splits:
    """Train, validation and test parts of one task.

    Attributes
    ----------
    train : Dataset
    val : Dataset or None
        Held out from training for model selection and early stopping; never the test set.
    test : Dataset
    """

    train: Dataset
    val: Dataset | None
    test: Dataset

    def __post_init__(self) -> None:
        for part in ("train", "test"):
            if not isinstance(getattr(self, part), Dataset):
                raise fail(part, getattr(self, part), "a Dataset")
        if self.val is not None and not isinstance(self.val, Dataset):
            raise fail("val", self.val, "a Dataset or None")
