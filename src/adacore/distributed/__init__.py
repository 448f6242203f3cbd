"""Selection on Dask (GreeDi) and training on torch.distributed (DDP helpers).

Dask is optional (the ``distributed`` extra): it is imported only when a selection
runs, so ``from adacore.distributed import greedi`` works without it.
"""

from adacore.distributed.selection import greedi

__all__ = ["greedi"]
