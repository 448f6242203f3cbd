"""Checkpoints (written atomically, loaded without running code) and JSON-lines logs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from adacore.atomic import atomic_write, atomic_write_bytes
from adacore.validation import InputError


def save_checkpoint(state: dict, path: Path) -> None:
    """Write a checkpoint atomically: a crash leaves the previous one intact."""
    atomic_write(path, lambda stream: torch.save(state, stream))


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint with ``weights_only=True``: tensors and plain data, never code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise InputError(f"--resume: no checkpoint at {str(path)!r}") from error
    except Exception as error:  # torch raises several types for a corrupt file
        raise InputError(f"checkpoint: cannot read {str(path)!r} ({type(error).__name__}: "
                         f"{error})") from error


def append_jsonl(path: Path, row: dict) -> None:
    """Append one JSON line and make it durable."""
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(row) + "\n")
        stream.flush()
        os.fsync(stream.fileno())


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines log; a torn last line (a crash mid-write) is dropped."""
    if not Path(path).exists():
        return []
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def rewrite_jsonl(path: Path, rows: list[dict]) -> None:
    """Replace a JSON-lines log atomically."""
    text = "".join(json.dumps(row) + "\n" for row in rows).encode()
    atomic_write_bytes(path, text)
