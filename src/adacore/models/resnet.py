"""Residual networks for small images (He et al. 2016): ResNet-(6n+2) and ResNet18.

Both share one skeleton: a 3x3 stem convolution (stride 1, no max pool), stages of
basic blocks (two 3x3 convolutions with batch norm), the first block of every stage but
the first halving the resolution, global average pooling and a linear classifier.
They differ in widths, depth and the shortcut used where a block changes shape:

- option ``"A"`` (the CIFAR ResNets of the paper): :class:`ChannelPadShortcut`, strided
  subsampling plus zero channels, no parameters;
- option ``"B"`` (ResNet18 and the ImageNet ResNets): a 1x1 strided convolution
  followed by batch norm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from adacore.models.initialization import init_conv_and_norm_
from adacore.models.interface import LastLayerModel
from adacore.validation import check_choice, check_int, fail

__all__ = ["ChannelPadShortcut", "BasicBlock", "ResNet", "ResNet20", "ResNet18",
           "cifar_resnet", "SHORTCUTS"]

SHORTCUTS = ("A", "B")


class ChannelPadShortcut(nn.Module):
    """Parameter-free shortcut (option A): keep every ``stride``-th pixel, pad channels with zeros.

    Parameters
    ----------
    in_channels : int
        Channels of the input.
    out_channels : int
        Channels of the output, ``>= in_channels``; the extra channels are zeros, split
        evenly before and after the input's (the extra one after, if odd).
    stride : int
        Subsampling step in both spatial dimensions; the output side is
        ``ceil(side / stride)``, as for a 3x3 convolution with padding 1.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.out_channels = check_int("out_channels", out_channels, in_channels)
        self.stride = check_int("stride", stride, 1)
        extra = self.out_channels - self.in_channels
        self.pad_before = extra // 2
        self.pad_after = extra - self.pad_before

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Subsample and zero-pad ``(n, in_channels, H, W)`` to ``(n, out_channels, H', W')``."""
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.pad_before or self.pad_after:
            x = F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out.
    stride : int
        Stride of the first convolution (2 to halve the resolution).
    shortcut : str
        ``"A"`` or ``"B"`` (see the module docstring); used only where the block
        changes the shape, the identity elsewhere.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 shortcut: str = "A"):
        super().__init__()
        check_choice("shortcut", shortcut, SHORTCUTS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride,
                               padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ChannelPadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = _projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(LastLayerModel):
    """A residual network of basic blocks for small images.

    Parameters
    ----------
    stage_widths : sequence of int
        Channels of each stage; the stem has ``stage_widths[0]`` channels.
    blocks_per_stage : sequence of int
        Number of basic blocks in each stage (same length as ``stage_widths``).
    num_classes : int
        Number of outputs.
    in_channels : int
        Channels of the input images.
    shortcut : str
        ``"A"`` (zero-padding, no parameters) or ``"B"`` (1x1 convolution + batch norm)
        where a block changes shape.
    zero_init_residual : bool
        Start the last batch norm of every block at zero, so each block begins as the
        identity (Goyal et al. 2017). Off by default, as in the paper.

    Notes
    -----
    ``features(x)`` is the globally average-pooled output of the last stage, shape
    ``(n, stage_widths[-1])``. Any input side works; every stage after the first halves
    it (rounding up).
    """

    def __init__(self, stage_widths: Sequence[int], blocks_per_stage: Sequence[int], *,
                 num_classes: int = 10, in_channels: int = 3, shortcut: str = "A",
                 zero_init_residual: bool = False):
        super().__init__()
        widths = [check_int(f"stage_widths[{i}]", w, 1) for i, w in enumerate(stage_widths)]
        blocks = [check_int(f"blocks_per_stage[{i}]", b, 1)
                  for i, b in enumerate(blocks_per_stage)]
        if not widths or len(widths) != len(blocks):
            raise fail("blocks_per_stage", blocks_per_stage,
                       f"one block count per stage ({len(widths)} stages, at least 1)")
        num_classes = check_int("num_classes", num_classes, 1)
        in_channels = check_int("in_channels", in_channels, 1)
        check_choice("shortcut", shortcut, SHORTCUTS)
        self.shortcut_type = shortcut

        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        stages = []
        channels = widths[0]
        for index, (width, count) in enumerate(zip(widths, blocks)):
            stride = 1 if index == 0 else 2
            stage = []
            for block in range(count):
                stage.append(BasicBlock(channels, width, stride if block == 0 else 1,
                                        shortcut))
                channels = width
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

        init_conv_and_norm_(self)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Average-pooled last-stage activations.

        Parameters
        ----------
        x : Tensor
            Images ``(n, in_channels, H, W)``.

        Returns
        -------
        Tensor
            Shape ``(n, stage_widths[-1])``.
        """
        return torch.flatten(self.pool(self.stages(self.stem(x))), 1)


def _cifar_blocks(depth) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise fail("depth", depth, "an int 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...)")
    return (depth - 2) // 6


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3, *,
                 shortcut: str = "A", zero_init_residual: bool = False) -> ResNet:
    """The CIFAR ResNet of depth ``6n + 2`` (He et al. 2016, section 4.2).

    Three stages of ``n`` basic blocks with 16, 32 and 64 channels.

    Parameters
    ----------
    depth : int
        ``6n + 2``: 20, 32, 44, 56, 110, ...
    num_classes : int
        Number of outputs.
    in_channels : int
        Channels of the input images.
    shortcut : str
        ``"A"`` (the paper's CIFAR choice, no parameters) or ``"B"`` (projections).
    zero_init_residual : bool
        See :class:`ResNet`.

    Returns
    -------
    ResNet
        Features of width 64. ResNet20 with option A and 10 classes has 269,722
        parameters.
    """
    blocks = _cifar_blocks(depth)
    model = ResNet((16, 32, 64), (blocks,) * 3, num_classes=num_classes,
                   in_channels=in_channels, shortcut=shortcut,
                   zero_init_residual=zero_init_residual)
    model.depth = depth
    return model


class ResNet20(ResNet):
    """ResNet20 for CIFAR: 3 stages of 3 basic blocks, 16/32/64 channels, option-A shortcuts.

    Parameters
    ----------
    num_classes : int
        Number of outputs.
    in_channels : int
        Channels of the input images.
    shortcut : str
        ``"A"`` (default; 269,722 parameters for 10 classes) or ``"B"`` (272,474).
    zero_init_residual : bool
        See :class:`ResNet`.

    Notes
    -----
    ``features(x)`` has width 64.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, *,
                 shortcut: str = "A", zero_init_residual: bool = False):
        super().__init__((16, 32, 64), (3, 3, 3), num_classes=num_classes,
                         in_channels=in_channels, shortcut=shortcut,
                         zero_init_residual=zero_init_residual)
        self.depth = 20


class ResNet18(ResNet):
    """ResNet18, CIFAR variant: 3x3 stem with stride 1, no max pool, 4 stages of 2 blocks.

    Widths 64/128/256/512 and projection (1x1 convolution + batch norm) shortcuts;
    11,173,962 parameters for 10 classes.

    Parameters
    ----------
    num_classes : int
        Number of outputs.
    in_channels : int
        Channels of the input images.
    zero_init_residual : bool
        See :class:`ResNet`.

    Notes
    -----
    ``features(x)`` has width 512.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, *,
                 zero_init_residual: bool = False):
        super().__init__((64, 128, 256, 512), (2, 2, 2, 2), num_classes=num_classes,
                         in_channels=in_channels, shortcut="B",
                         zero_init_residual=zero_init_residual)
