"""Optimizer and learning-rate schedule from a run's settings."""

from __future__ import annotations

import torch

from adacore.validation import check_choice

SCHEDULES = ("constant", "multistep", "cosine")


def build_optimizer(model: torch.nn.Module, *, lr: float, momentum: float, nesterov: bool,
                    weight_decay: float) -> torch.optim.SGD:
    """SGD with momentum (Nesterov optional) and weight decay."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                           nesterov=nesterov and momentum > 0, weight_decay=weight_decay)


def build_scheduler(optimizer, *, schedule: str, epochs: int, warmup_epochs: int = 0,
                    milestones: tuple[int, ...] = (), gamma: float = 0.1):
    """A per-epoch schedule: constant, multi-step or cosine, after an optional linear warm-up."""
    check_choice("schedule", schedule, SCHEDULES)
    after = max(1, epochs - warmup_epochs)
    if schedule == "constant":
        main = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    elif schedule == "multistep":
        marks = list(milestones) or [int(after * 0.5), int(after * 0.75)]
        main = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=marks, gamma=gamma)
    else:
        main = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=after)
    if warmup_epochs <= 0:
        return main
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup_epochs + 1),
                                               total_iters=warmup_epochs)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, main],
                                                 milestones=[warmup_epochs])
