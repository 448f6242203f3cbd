"""Batched image augmentation on tensors: one gather for the whole batch, any device."""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from adacore.validation import fail


def random_crop_flip(x: torch.Tensor, *, padding: int = 4, flip: bool = True,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop after zero padding, then random horizontal flip, per example.

    The standard CIFAR augmentation: pad each image by ``padding`` zeros on every side,
    cut a window of the original size at a uniformly random offset, and mirror it
    left-right with probability 1/2. All examples are done in one indexing operation.

    Parameters
    ----------
    x : torch.Tensor
        Batch of images ``(n, channels, height, width)``, any dtype and device.
    padding : int, default 4
        Zero padding on each side; 0 disables the crop.
    flip : bool, default True
        Whether to flip half of the examples horizontally.
    generator : torch.Generator, optional
        Source of randomness (on any device); the same seed gives the same output.

    Returns
    -------
    torch.Tensor
        Augmented batch, same shape, dtype and device as ``x``.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise fail("x", x, "a 4-D tensor (n, channels, height, width)")
    if isinstance(padding, bool) or not isinstance(padding, numbers.Integral) or padding < 0:
        raise fail("padding", padding, "an int >= 0")
    if not isinstance(flip, bool):
        raise fail("flip", flip, "True or False")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise fail("generator", generator, "a torch.Generator or None")
    n, _, height, width = x.shape
    draw_on = generator.device if generator is not None else x.device
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator,
                            device=draw_on).to(x.device)
    flipped = torch.randint(0, 2, (n,), generator=generator, device=draw_on).to(x.device)
    if not flip:
        flipped = torch.zeros_like(flipped)
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    row_steps = torch.arange(height, device=x.device)
    col_steps = torch.arange(width, device=x.device)
    rows = offsets[:, :1] + row_steps  # (n, height)
    # A flipped example reads its window's columns right to left.
    cols = offsets[:, 1:] + torch.where(flipped[:, None].bool(), width - 1 - col_steps,
                                        col_steps)  # (n, width)
    batch = torch.arange(n, device=x.device)
    return padded[batch[:, None, None, None],
                  torch.arange(x.shape[1], device=x.device)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]
