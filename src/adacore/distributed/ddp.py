"""Training on torch.distributed (DDP): process groups, the coreset sampler, sharded probes.

``torchrun --nproc_per_node W -m adacore.cli run ...`` needs no flag of its own:
:meth:`adacore.training.Trainer.run` sees torchrun's environment (``WORLD_SIZE`` > 1,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), opens the default process
group itself (NCCL on CUDA, gloo on the CPU) and closes it at the end. How a run maps
onto W ranks, each holding the whole training set as a single-process run does:

- **probe**: rank r probes a contiguous block of *whole* probe batches
  (:func:`shard_bounds`), so each example's vectors come out of the same batch, through
  the same kernels, as in a single-process probe; rank 0 gathers them
  (:func:`gather_rows`, padded tensors through ``gather``, never pickled).
- **selection**: rank 0 alone runs the strategy (whose state, AdaCore's smoothing
  included, lives there) and hands the coreset to every rank (:func:`on_rank0`).
- **batches**: :class:`DistributedCoresetSampler` draws the single-process run's
  permutation of the coreset from the same seeded generator on every rank and gives
  rank r a contiguous share of each global batch.
- **loss**: :func:`weighted_loss` scales each rank's share so that DDP's gradient
  average is the single-process gradient of ``mean(w l)`` over the global batch.
- **evaluation**: each rank evaluates a block of whole batches; the sums are added up
  across ranks, so every rank ends an epoch with the same figures.
- **files**: rank 0 alone takes the folder lock and writes ``metrics.jsonl``,
  ``checkpoint.pt`` and ``run.json``; on resume it reads the checkpoint and broadcasts
  it, so the other ranks never touch the folder (no shared file system is needed).

A run is equal to the single-process run up to the order of float additions (the
gradient all-reduce adds two partial sums where one process adds one), except for
models with batch normalisation on the CPU: there each rank normalises by its own
share's statistics (``SyncBatchNorm`` exists for CUDA only, and is used there); and
a rank whose share of a short last batch is empty steps on a zero-weight example,
which adds nothing to the gradient but does enter that rank's batch statistics.

In a training loop of one's own (every rank runs it; the loader splits by itself
when a group is open):

    ddp.init_from_env(device)                     # or torch.distributed's own init
    loader = CoresetLoader(x, y, get_strategy("adacore", fraction=0.01), seed=0)
    trained = ddp.wrap_model(model, device)       # probe and save `model` itself
    for xb, yb, wb in loader.epoch(model):
        losses = F.cross_entropy(trained(xb), yb, reduction="none")
        loss, batch_loss, _ = ddp.weighted_loss(losses, wb)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from adacore.probe import ProbeResult, probe
from adacore.validation import InputError, check_int

__all__ = ["DistributedCoresetSampler", "GlobalBatch", "all_sum", "broadcast_buffers",
           "gather_rows", "init_from_env", "is_distributed", "launched_distributed",
           "on_rank0", "probe_sharded", "process_group", "rank", "rank_device",
           "shard_bounds", "weighted_loss", "world_size", "wrap_model"]

_ENVIRONMENT = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

Result = TypeVar("Result")


# ---------------------------------------------------------------- process group

def is_distributed() -> bool:
    """Whether a default process group of more than one process is open."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the default group (0 outside one)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Processes in the default group (1 outside one)."""
    return dist.get_world_size() if is_distributed() else 1


def _place() -> tuple[int, int]:
    """(rank, world size), for code whose arguments shadow the two functions."""
    return rank(), world_size()


def launched_distributed() -> bool:
    """Whether the environment asks for more than one process (torchrun sets WORLD_SIZE)."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(text) > 1
    except ValueError:
        raise InputError(f"WORLD_SIZE: got {text!r}, expected an integer (torchrun sets "
                         f"it)") from None


def rank_device(device: torch.device) -> torch.device:
    """``device`` for this process: a CUDA device without an index becomes
    ``cuda:LOCAL_RANK`` when the environment asks for several processes."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and launched_distributed():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def init_from_env(device: torch.device) -> bool:
    """Open the default process group from torchrun's environment when it asks for one.

    Does nothing (and returns False) when ``WORLD_SIZE`` is unset or 1, or when a
    default group is open already (the caller's own, kept as it is). Otherwise opens
    one with ``init_method="env://"``, backend ``"nccl"`` for a CUDA ``device`` (made
    the current device) and ``"gloo"`` otherwise, and returns True: the caller then owns
    it and closes it with ``torch.distributed.destroy_process_group()``.

    Raises
    ------
    InputError
        When torch.distributed is missing or a variable of torchrun's environment
        (RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) is unset.
    """
    if not launched_distributed() or (dist.is_available() and dist.is_initialized()):
        return False
    if not dist.is_available():
        raise InputError("WORLD_SIZE: more than one process was asked for, but this torch "
                         "build has no torch.distributed")
    missing = [name for name in _ENVIRONMENT if name not in os.environ]
    if missing:
        raise InputError(f"{missing[0]}: unset, but WORLD_SIZE = {os.environ['WORLD_SIZE']} "
                         f"asks for a distributed run; launch it with torchrun")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return True


@contextlib.contextmanager
def process_group(device: torch.device):
    """``with process_group(device):`` — :func:`init_from_env` on entry; on exit the
    group is destroyed if this call opened it, after a barrier when the body ended
    normally: a rank whose last collective has returned (a broadcast's sender, say) may
    otherwise tear the group down while another rank's side is still in flight (the
    likely cause of one abort seen at exit, "terminate called without an active
    exception"). After an error there is no barrier, which the other ranks may never
    reach."""
    created = init_from_env(device)
    try:
        yield
        if created:
            dist.barrier()
    finally:
        if created:
            dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Where tensors must be for the default group's collectives."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def on_rank0(action: Callable[[], Result]) -> Result:
    """Run ``action()`` on rank 0 alone and return its result on every rank.

    For what one process must decide or do for all: take the folder lock, read a
    checkpoint, run a selection. An exception on rank 0 is raised on every rank (an
    :class:`InputError` as an InputError with the same message, anything else as a
    RuntimeError naming it), so no rank waits in a collective for a rank that gave up.
    The result travels through ``broadcast_object_list`` (its size, then its pickled
    bytes): fine for a checkpoint or a coreset, not for per-example vectors
    (:func:`gather_rows` moves those). Outside a process group it is just ``action()``.
    """
    if not is_distributed():
        return action()
    message: list = [None]
    failure = None
    if rank() == 0:
        try:
            message = [("ok", action())]
        except Exception as error:  # every kind must reach the other ranks
            failure = error
            message = [("error", isinstance(error, InputError),
                        f"{type(error).__name__}: {error}", str(error))]
    dist.broadcast_object_list(message, src=0, device=_comm_device())
    if failure is not None:
        raise failure
    if message[0][0] == "error":
        _, is_input_error, described, text = message[0]
        raise InputError(text) if is_input_error else RuntimeError(f"rank 0 failed: "
                                                                   f"{described}")
    return message[0][1]


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """The module to train with: ``model`` itself outside a process group, otherwise
    ``DistributedDataParallel(model)`` (its batch norms made ``SyncBatchNorm`` on CUDA,
    the layers' state and names unchanged). Probe, evaluate and save ``model``, not
    the wrapper: its state_dict keys carry no ``module.`` prefix, and it runs without
    collectives, so ranks may call it on blocks of different sizes."""
    if not is_distributed():
        return model
    device = torch.device(device)
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index],
                                                   output_device=device.index)
    return nn.parallel.DistributedDataParallel(model)


def broadcast_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's buffers (batch-norm running statistics): DDP does so
    before each training forward, which leaves the last step's updates apart."""
    if not is_distributed():
        return
    for buffer in model.buffers():
        carried = buffer.to(_comm_device())
        dist.broadcast(carried, src=0)
        buffer.copy_(carried)


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over ranks (a new tensor, same dtype and device; a copy alone
    outside a process group)."""
    total = values.detach().to(_comm_device() if is_distributed() else values.device,
                               copy=True)
    if is_distributed():
        dist.all_reduce(total)
    return total.to(values.device)


# ---------------------------------------------------------------- batches and loss

def shard_bounds(n: int, block: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of rank ``rank``'s share of ``n`` rows cut into blocks.

    The ``ceil(n / block)`` blocks of ``block`` rows (the last one may be short) are
    dealt out contiguously, the first ``blocks % world_size`` ranks taking one more
    (``torch.tensor_split``'s rule), so a rank's rows are whole blocks of the
    single-process pass in their order. A rank may get none (``start == stop``) when
    there are fewer blocks than ranks.
    """
    n = check_int("n", n, 0)
    block = check_int("block", block, 1)
    world_size = check_int("world_size", world_size, 1)
    if not 0 <= rank < world_size:
        raise InputError(f"rank: got {rank!r}, expected an int in [0, {world_size})")
    blocks = -(-n // block)
    per_rank, extra = divmod(blocks, world_size)
    first = rank * per_rank + min(rank, extra)
    last = first + per_rank + (1 if rank < extra else 0)
    return min(first * block, n), min(last * block, n)


@dataclass(frozen=True)
class GlobalBatch:
    """One global batch: its ``rows`` (into the training set) and ``weights``, all
    ranks' shares together, and ``share``, the slice of them that is this rank's.

    ``padded``: this rank's share is empty (a global batch of fewer examples than
    ranks); ``share`` then names the batch's first example, which the rank steps on
    with weight 0, so that every rank runs a forward on at least one example (models
    check their input on its first row, batch norm needs a batch) and the gradient
    all-reduce stays in step, adding exactly nothing.
    """

    rows: torch.Tensor
    weights: torch.Tensor
    share: slice
    padded: bool = False

    @property
    def share_rows(self) -> torch.Tensor:
        """Rows of this rank's share."""
        return self.rows[self.share]

    @property
    def share_weights(self) -> torch.Tensor:
        """Weights of this rank's share (zero for a padded one)."""
        weights = self.weights[self.share]
        return torch.zeros_like(weights) if self.padded else weights


class DistributedCoresetSampler:
    """This rank's share of every batch of a weighted coreset, in the single-process order.

    One pass draws one permutation of the coreset's positions from ``generator``
    (``torch.randperm``, as the single-process loader does), cuts it into global
    batches of ``batch_size`` (the last one may be short) and gives rank r the
    contiguous share ``[r m // W ...)`` of each, by ``torch.tensor_split``'s rule:
    shares differ by one example at most, and together they are the global batch,
    each example once. Every rank draws the same permutation from the same generator
    state, so no indices travel per batch. A global batch smaller than the world
    leaves some ranks an empty share: they step on its first example with weight 0
    (see :class:`GlobalBatch`), so that the gradient all-reduce stays in step.

    Parameters
    ----------
    indices : int tensor, shape (k,)
        Rows of the coreset in the training set.
    weights : float tensor, shape (k,)
        Their weights.
    batch_size : int
        Examples in a global batch (all ranks together).
    generator : torch.Generator
        Source of the batch order, in the same state on every rank; each pass advances it.
    rank, world_size : int, optional
        This process's place (default: the default group's, or 0 of 1 outside one).

    Iterating yields ``(rows, weights)`` of this rank's share, batch after batch;
    :meth:`global_batches` yields the whole global batches with the share marked.
    """

    def __init__(self, indices: torch.Tensor, weights: torch.Tensor, *, batch_size: int,
                 generator: torch.Generator, rank: int | None = None,
                 world_size: int | None = None):
        self.indices = torch.as_tensor(indices).long().reshape(-1)
        self.weights = torch.as_tensor(weights).reshape(-1)
        if self.weights.shape[0] != self.indices.shape[0]:
            raise InputError(f"weights: got {self.weights.shape[0]}, expected one per index "
                             f"({self.indices.shape[0]})")
        self.batch_size = check_int("batch_size", batch_size, 1)
        if not isinstance(generator, torch.Generator):
            raise InputError(f"generator: got {type(generator).__name__}, expected a "
                             f"torch.Generator (the same state on every rank)")
        self.generator = generator
        default_rank, default_world = _place()
        self.world_size = check_int("world_size", default_world if world_size is None
                                    else world_size, 1)
        self.rank = default_rank if rank is None else rank
        if not isinstance(self.rank, int) or not 0 <= self.rank < self.world_size:
            raise InputError(f"rank: got {self.rank!r}, expected an int in "
                             f"[0, {self.world_size})")

    def __len__(self) -> int:
        """Global batches in a pass (the same on every rank)."""
        return -(-self.indices.shape[0] // self.batch_size)

    def share(self, size: int) -> slice:
        """This rank's positions within a global batch of ``size`` examples (maybe none)."""
        return slice(*shard_bounds(size, 1, self.rank, self.world_size))

    def global_batches(self) -> Iterator[GlobalBatch]:
        """One pass: every global batch, in order, with this rank's share marked."""
        order = torch.randperm(self.indices.shape[0], generator=self.generator)
        for start in range(0, order.shape[0], self.batch_size):
            chosen = order[start:start + self.batch_size]
            share = self.share(chosen.shape[0])
            padded = share.start == share.stop
            yield GlobalBatch(self.indices[chosen], self.weights[chosen],
                              slice(0, 1) if padded else share, padded)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.global_batches():
            yield batch.share_rows, batch.share_weights


def weighted_loss(losses: torch.Tensor, weights: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loss to backpropagate for this rank's share of a weighted global batch.

    The single-process loss of a global batch of m examples is ``mean(w l) =
    sum(w l) / m``, the weights being the coreset's rescaled to mean 1 over the *whole
    coreset* (:meth:`adacore.Coreset.normalized_weights`): its expectation over the
    batch order is proportional to ``sum_j gamma_j g_j``, the sum the coreset's
    guarantee is about, and a short last batch gets the same expected step as a full
    one. (Dividing by ``sum(w)`` per batch instead would be a biased ratio estimator
    that shrinks the heaviest weights' effect.) DDP averages the W ranks' gradients,
    so rank r backpropagates ``W sum_r(w l) / m``, with m counted over the whole
    global batch; one all-reduce of two numbers gives m and the global loss, the same
    on every rank. Under torch.distributed an example of weight 0 is the padding of an
    empty share (:class:`GlobalBatch`) and is not counted in m.

    Parameters
    ----------
    losses, weights : Tensor, shape (m,)
        Per-example losses of this rank's share and their weights.

    Returns
    -------
    (loss, batch_loss, batch_size)
        ``loss``: to call ``backward()`` on. ``batch_loss``: the global batch's
        ``mean(w l)``, detached, identical on every rank, so that a non-finite one
        stops every rank at the same step. ``batch_size``: m, the examples in the
        global batch (a float tensor). Outside a process group: ``mean(w l)``, that
        loss detached, ``len(losses)``.
    """
    weighted_sum = (weights * losses).sum()
    if not is_distributed():
        count = torch.tensor(float(losses.numel()), device=losses.device)
        loss = weighted_sum / count
        return loss, loss.detach(), count
    # counted in float64: a low-precision loss dtype would round large counts
    count = (weights != 0).sum().to(torch.float64)
    sums = all_sum(torch.stack([weighted_sum.detach().to(torch.float64), count]))
    loss = weighted_sum * world_size() / sums[1].to(weighted_sum.dtype)
    return loss, (sums[0] / sums[1]).to(weighted_sum.dtype), sums[1]


# ---------------------------------------------------------------- probes

def gather_rows(block: torch.Tensor | None, n: int, block_size: int,
                dst: int = 0) -> torch.Tensor | None:
    """Rows probed in shards, put back together on rank ``dst``.

    Rank r holds ``block``, the rows ``shard_bounds(n, block_size, r, W)`` of an
    ``(n, p)`` array (None or zero rows when its share is empty; ``dst`` must hold
    some). Every block is padded to the longest and sent with one ``gather`` of plain
    tensors (no pickling); ``dst`` returns the ``(n, p)`` array on its device, the
    other ranks None.
    """
    world, here = world_size(), rank()
    device = _comm_device()
    width = torch.zeros(1, dtype=torch.int64, device=device)
    if here == dst:
        if block is None:
            raise InputError(f"dst: rank {dst} holds no rows to take the width from")
        width[0] = block.shape[1]
    dist.broadcast(width, src=dst)
    bounds = [shard_bounds(n, block_size, r, world) for r in range(world)]
    longest = max(stop - start for start, stop in bounds)
    dtype = block.dtype if block is not None else torch.float32
    padded = torch.zeros((longest, int(width)), dtype=dtype, device=device)
    if block is not None and block.shape[0]:
        padded[:block.shape[0]] = block.to(device)
    received = [torch.empty_like(padded) for _ in range(world)] if here == dst else None
    dist.gather(padded, gather_list=received, dst=dst)
    if here != dst:
        return None
    out_device = block.device
    pieces = [part[:stop - start] for part, (start, stop) in zip(received, bounds)]
    return torch.cat(pieces).to(out_device)


def probe_sharded(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                  batch_size: int = 1024, **options) -> ProbeResult | None:
    """:func:`adacore.probe.probe` with each rank probing its block of whole batches.

    Rank r probes rows :func:`shard_bounds` ``(n, batch_size, r, W)``; rank 0 gathers
    the vectors (and Hessian diagonals) and returns the full :class:`ProbeResult`, the
    same rows from the same batches as ``probe(model, x, y, batch_size=batch_size,
    ...)``; the other ranks return None. Every rank must call it with the same
    arguments and the same model. ``options`` go to :func:`~adacore.probe.probe`.
    Outside a process group it is :func:`~adacore.probe.probe`.
    """
    if not is_distributed():
        return probe(model, x, y, batch_size=batch_size, **options)
    batch_size = check_int("batch_size", batch_size, 1)
    n = len(x)
    start, stop = shard_bounds(n, batch_size, rank(), world_size())
    local = None
    if stop > start:
        local = probe(model, x[start:stop], y[start:stop], batch_size=batch_size, **options)
    # every rank learns whether diagonals come back (rank 0 always has rows)
    with_diag = on_rank0(lambda: local.hessian_diag is not None)
    grads = gather_rows(None if local is None else local.grads, n, batch_size)
    diag = gather_rows(None if local is None else local.hessian_diag, n, batch_size) \
        if with_diag else None
    if rank() != 0:
        return None
    return ProbeResult(grads=grads, hessian_diag=diag,
                       labels=torch.as_tensor(y).long().to(grads.device), space=local.space,
                       seconds=local.seconds)
