"""Resumable training state: what a checkpoint holds, what it must agree on, and how it is written and read.

A checkpoint is written after every epoch and when the job is asked to stop; the next run continues
from it and gives the same model as an uninterrupted run. It holds tensors and plain Python values
only, so it is read with ``torch.load(weights_only=True)``: a file that carries anything else (a
pickled object that would run code) is refused rather than executed.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_output, save_torch
from .data import FEATURE_KEYS, Captions, Features
from .distributed import World
from .errors import SatError, first_line
from .model import plain

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Everything a checkpoint must hold to continue exactly where training stopped."""

    epoch: int = 0  # the epoch under way (or next)
    step: int = 0  # batches of it already done
    baseline: float | None = None  # hard attention: set from the first batch, then a moving average (per word)
    best_score: float = -float("inf")  # the selection metric of the best epoch (higher is better)
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    average: dict[str, torch.Tensor] | None = None  # moving average of the weights (ema_decay)
    average_steps: int = 0
    rows: list[dict] = field(default_factory=list)  # train_log.csv so far
    sums: dict[str, float] = field(default_factory=dict)  # running sums of the epoch under way
    self_critical_from: int | None = None  # the first self-critical epoch, once they have begun


def fingerprint(settings: dict[str, Any], seed: int, features: Features, captions: Captions) -> dict[str, Any]:
    """What a checkpoint must agree on to be continued (the model's shapes follow from these)."""
    return plain(
        {
            "settings": settings,
            "seed": seed,
            "features": {k: features.attrs.get(k) for k in FEATURE_KEYS},
            "captions": hashlib.sha256(captions.tokens.tobytes()).hexdigest(),
        }
    )


def differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """``key (then, now)`` for every leaf where the nested dicts ``a`` and ``b`` differ."""
    keys = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            keys += differences(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            keys.append(f"{prefix}{k} ({a.get(k)!r} then, {b.get(k)!r} now)")
    return keys


def save(
    path: Path, fp: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, progress: Progress, world: World
) -> None:
    """Rank 0 writes (every process holds the same weights and optimizer state); the others wait for it."""
    if world.main:
        state = {
            "fingerprint": fp,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "progress": plain(vars(progress)),
        }
        with atomic_output(path) as tmp:
            save_torch(state, tmp)
    world.barrier()


def load(path: Path, fp: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Progress:
    """The progress stored in ``path``, with the model and optimizer restored; SatError if it does not fit."""
    try:
        # On the CPU; the model and optimizer copy to their device when loaded.
        state = torch.load(path, map_location="cpu", weights_only=True)
        changed = differences(state["fingerprint"], fp)
    except Exception as e:  # any unreadable or foreign file means the same thing
        raise SatError(f"cannot read the checkpoint {path} ({first_line(e)}); delete it to train from the start") from e
    if changed:
        raise SatError(
            f"the checkpoint {path} was written by a run with other settings or data:\n  "
            + "\n  ".join(changed)
            + "\nRestore those settings to continue it, or delete it to train from the start."
        )
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        progress = Progress(**state["progress"])
        _check(progress, model.state_dict())
    except Exception as e:  # noqa: BLE001 - a file that matches the fingerprint but not the model
        raise SatError(
            f"cannot continue the checkpoint {path} ({first_line(e)}); delete it to train from the start"
        ) from e
    log.info("resuming from %s: epoch %d, batch %d", path, progress.epoch + 1, progress.step)
    return progress


def _check(progress: Progress, weights: dict[str, torch.Tensor]) -> None:
    """ValueError unless ``progress`` is one that training itself could have saved (a best epoch with its
    weights among the epochs done), so that an edited file cannot end in a model without weights."""
    done, step, best = progress.epoch, progress.step, progress.best_epoch
    if not (isinstance(done, int) and isinstance(step, int)) or done != len(progress.rows) or step < 0:
        raise ValueError(f"epoch {done!r}, batch {step!r}, with {len(progress.rows)} logged epochs")
    if (progress.best_state is None) != (best == -1) or not -1 <= best < done:
        raise ValueError(f"best epoch {best!r} of {done}, with weights: {progress.best_state is not None}")
    critical = progress.self_critical_from
    if critical is not None and not (isinstance(critical, int) and 0 <= critical <= done and best >= 0):
        raise ValueError(f"self-critical epochs from {critical!r} of {done}, after best epoch {best!r}")
    shapes = {k: v.shape for k, v in weights.items()}
    for kept in (progress.best_state, progress.average):
        if kept is not None and {k: v.shape for k, v in kept.items()} != shapes:
            raise ValueError("kept weights that do not fit the model")
