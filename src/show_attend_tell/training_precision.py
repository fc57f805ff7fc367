"""The precision a training job computes in: the configured one, or for auto what a probe of its step finds faster."""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import numpy as np
import torch

from . import objectives, precision
from .model import Captioner
from .settings import Settings


def probe_step(model: Captioner, batch: tuple[torch.Tensor, ...], device: torch.device, precision_name: str) -> float:
    """Seconds of a forward and backward pass of ``model`` (a throwaway copy) on ``batch`` in ``precision_name``."""
    features, tokens, mask = batch
    t0 = time.perf_counter()
    with precision.autocast(device, precision_name):
        out = model(features, tokens[:, :-1])
    objectives.soft_objective(out, tokens[:, 1:], mask, 1.0).loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def choose(settings: Settings, model: Captioner, by_length: dict[int, np.ndarray], device: torch.device) -> str:
    """``settings.precision``, or for auto what a probe of a training step on a random batch finds faster.

    The probe (built only if ``precision.choose`` times anything) runs a copy of the model on a batch of the
    median train caption length, after one warm-up pass in each precision; the global random state is left
    as it was, so probing changes no result.
    """
    c = model.config
    length = int(statistics.median_low(np.repeat(list(by_length), [len(v) for v in by_length.values()])))
    workload = (
        f"train {c.attention} L={c.num_locations} D={c.feature_dim} m={c.embed_dim} n={c.hidden_dim} "
        f"a={c.attention_dim} V={c.vocab_size} batch={settings.batch_size} words={length}"
    )
    ready: dict[str, Any] = {}

    def probe(name: str) -> float:
        if not ready:
            ready["model"] = copy.deepcopy(model).train()
            ready["batch"] = (
                torch.randn(settings.batch_size, c.num_locations, c.feature_dim, device=device),
                torch.randint(0, c.vocab_size, (settings.batch_size, length + 2), device=device),
                torch.ones(settings.batch_size, length + 1, device=device),
            )
        if name not in ready:  # the first pass in each precision warms up
            ready[name] = probe_step(ready["model"], ready["batch"], device, name)
        return probe_step(ready["model"], ready["batch"], device, name)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        return precision.choose(settings.precision, device, probe, workload)
