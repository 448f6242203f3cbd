"""Checkpoints (written atomically, loaded without running code) and JSON-lines logs."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import torch

from adacore.atomic import atomic_write, atomic_write_bytes, open_regular
from adacore.validation import InputError


def save_checkpoint(state: dict, path: Path) -> None:
    """Write a checkpoint atomically: a crash leaves the previous one intact."""
    atomic_write(path, lambda stream: torch.save(state, stream))


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint with ``weights_only=True``: tensors and plain data, never code.

    A file in torch's legacy (non-zip) format is read into memory first: torch's
    weights-only unpickler reads a string at the length the file declares, and on a
    file object that allocates the declared length (gigabytes, for a damaged file of a
    few bytes); from a byte buffer it costs only what the file holds.
    """
    try:
        source = path
        with open(path, "rb") as stream:
            if stream.read(4) != b"PK\x03\x04":      # not a zip: legacy format or a pickle
                stream.seek(0)
                source = io.BytesIO(stream.read())
        state = torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise InputError(f"--resume: no checkpoint at {str(path)!r}") from error
    except Exception as error:  # torch raises several types for a corrupt file
        refused = _refusal(error)
        if refused is not None:
            raise InputError(f"checkpoint: cannot read {str(path)!r}: it holds objects other than "
                             f"tensors and plain data ({refused}); refused, nothing was "
                             f"unpickled") from None
        raise InputError(f"checkpoint: cannot read {str(path)!r} ({type(error).__name__}: "
                         f"{_first_line(error)})") from None
    if not isinstance(state, dict):
        raise InputError(f"checkpoint: {str(path)!r} holds a {type(state).__name__}, "
                         f"expected a dict as save_checkpoint writes")
    return state


def _first_line(error: BaseException, limit: int = 200) -> str:
    """The error's first line; for torch's weights-only unpickler, its own diagnosis
    (the part after its advice on ``weights_only``)."""
    text = str(error)
    if _REFUSED in text:
        text = text.split(_REFUSED, 1)[1]
    lines = text.strip().splitlines()
    return lines[0][:limit] if lines else ""


# torch's weights-only unpickler says so when it refuses a global (a class, a function)
_REFUSED = "WeightsUnpickler error:"


def _refusal(error: BaseException) -> str | None:
    """The global (class, function) torch's weights-only unpickler refused, without its
    advice to load the file with ``weights_only=False`` (six lines, and exactly what must
    not be done here); None for any other error."""
    if not isinstance(error, pickle.UnpicklingError) or _REFUSED not in str(error):
        return None
    detail = str(error).split(_REFUSED, 1)[1].strip().splitlines()
    if not detail or "global" not in detail[0].lower():
        return None                  # a malformed stream, not a refused object
    return detail[0].split(". ")[0].rstrip(".")[:200]


# what Trainer saves after every epoch, and the type each entry must have
RUN_CHECKPOINT_KEYS = {"config": dict, "model": dict, "optimizer": dict, "scheduler": dict,
                       "loader": dict, "torch_rng": torch.Tensor, "augment_rng": torch.Tensor,
                       "totals": dict}


def check_run_checkpoint(state: dict, path: Path, *, epochs: int | None = None) -> dict:
    """A run's checkpoint as :class:`~adacore.training.Trainer` writes it, or one
    :class:`InputError` naming the file and what is wrong: a missing entry, an entry of
    the wrong type, or a loader epoch outside [0, ``epochs``] (no upper bound if None)."""
    where = f"--resume: the checkpoint {str(path)!r}"
    missing = sorted(set(RUN_CHECKPOINT_KEYS) - set(state))
    if missing:
        raise InputError(f"{where} lacks {', '.join(map(repr, missing))}; expected the "
                         f"entries {', '.join(sorted(RUN_CHECKPOINT_KEYS))} as a run saves them")
    for key, kind in RUN_CHECKPOINT_KEYS.items():
        if not isinstance(state[key], kind):
            raise InputError(f"{where} holds a {type(state[key]).__name__} as {key!r}, "
                             f"expected a {kind.__name__}")
    epoch = state["loader"].get("epoch")
    expected = "an int >= 0" if epochs is None else f"an int in [0, {epochs}]"
    if (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0
            or (epochs is not None and epoch > epochs)):
        raise InputError(f"{where} claims epoch {epoch!r}, expected {expected}")
    if not isinstance(state.get("lr_changes", []), list):
        raise InputError(f"{where} holds a {type(state['lr_changes']).__name__} as "
                         f"'lr_changes', expected a list")
    totals = state["totals"]
    if not all(isinstance(totals.get(key), (int, float)) for key in ("examples", "wall")):
        raise InputError(f"{where} holds totals {totals!r}, expected the numbers "
                         f"'examples' and 'wall'")
    return state


def append_jsonl(path: Path, row: dict) -> None:
    """Append one JSON line and make it durable; ``path`` must be a regular file (or
    nothing yet): a FIFO, device or symbolic link there is an :class:`InputError`."""
    descriptor = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with open(descriptor, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(row) + "\n")
        stream.flush()
        os.fsync(stream.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines log; a torn last line (a crash mid-write) is dropped.

    Only the last line can be torn, and then it lacks its newline (:func:`append_jsonl`
    writes a row and its newline at once): it is kept if it still parses as a JSON
    object, dropped if not. Any complete line that is not a JSON object is damage and
    raises :class:`InputError` naming the line; a missing file has no rows.
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as error:
        raise InputError(f"{str(path)!r}: cannot read the metrics log ({error})") from error
    torn = lines.pop()                     # b"" when the file ends with a newline
    rows = []
    for number, line in enumerate(lines, start=1):
        row = _json_object(line)
        if row is None:
            raise InputError(f"{str(path)!r}: line {number} is not a JSON object "
                             f"({line[:60]!r}), expected one row per line")
        rows.append(row)
    row = _json_object(torn) if torn else None
    if row is not None:
        rows.append(row)
    return rows


def _json_object(line: bytes) -> dict | None:
    try:
        row = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):   # bad JSON or UTF-8, an integer over 4300 digits
        return None
    return row if isinstance(row, dict) else None


def rewrite_jsonl(path: Path, rows: list[dict]) -> None:
    """Replace a JSON-lines log atomically."""
    text = "".join(json.dumps(row) + "\n" for row in rows).encode()
    atomic_write_bytes(path, text)
