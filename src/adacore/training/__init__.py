"""Training on coresets: the drop-in loader, the trainer, schedules and checkpoints."""

from adacore.training.loader import CoresetLoader
from adacore.training.sampler import CoresetSampler
from adacore.training.trainer import NonFiniteLoss, TrainConfig, Trainer, evaluate, run_record

__all__ = ["CoresetLoader", "CoresetSampler", "NonFiniteLoss", "TrainConfig", "Trainer", "evaluate",
           "run_record"]
