"""One training job set up: its data read, its model, optimizer and precision chosen (``train`` runs it).

Under torchrun every process sets up its own job; the model is wrapped by DDP when there are several.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from . import checkpoint, heap, precision, self_critical, training_precision, validation
from .data import Captions, Features, read_encoded, read_length_dictionary, references
from .distributed import World
from .errors import SatError
from .model import Captioner
from .settings import Settings

log = logging.getLogger("show_attend_tell.train")


@dataclass
class Run:
    """One training job: its data, model and optimizer, and where it writes."""

    settings: Settings
    seed: int
    world: World
    captions: Captions
    features: Features
    by_length: dict[int, np.ndarray]
    val: validation.ValidationSet
    model: Captioner
    net: torch.nn.Module  # the model, wrapped by DDP when there are several processes
    optimizer: torch.optim.Optimizer
    checkpoint: Path
    fingerprint: dict
    precision: str
    progress: bool
    captions_csv: Path

    def autocast(self) -> contextlib.AbstractContextManager:
        return precision.autocast(self.world.device, self.precision)

    @property
    def train_images(self) -> np.ndarray:
        """The images with training captions: what a self-critical epoch samples for."""
        return np.unique(self.captions.image_index[self.captions.splits == "train"])

    @functools.cached_property
    def critic(self) -> self_critical.CiderD:
        """CIDEr-D against the training references, for the self-critical epochs (built when first needed)."""
        return self_critical.CiderD(references(self.captions_csv, "train"))


class Inputs(NamedTuple):
    """The files a training job reads: the encode, vocab, prepare, lengths and features stages' outputs."""

    captions_h5: str | Path
    vocab_csv: str | Path
    captions_csv: str | Path
    lengths_json: str | Path
    features_h5: str | Path


def start(
    files: Inputs,
    settings: Settings,
    seed: int,
    world: World,
    checkpoint_path: Path,
    *,
    threads: int | None,
    progress: bool,
) -> Run:
    """Read the data, build the model and optimizer, and choose the precision."""
    if threads:
        torch.set_num_threads(max(1, threads // world.local_size))
    if world.device.type == "cpu":
        heap.keep_freed_memory()
    captions = read_encoded(files.captions_h5, files.vocab_csv)
    # Every process holds its own copy: the node's budget is shared. Read per batch, the file's pages
    # are cached once by the OS for all of them.
    features = Features(files.features_h5, settings.features_memory_gb / world.local_size)
    features.check_images(captions)
    by_length = read_length_dictionary(files.lengths_json)
    val = validation.validation_set(captions, files.captions_csv, settings.val_images)

    torch.manual_seed(seed)
    config = settings.model_config(len(captions.vocab), features.num_locations, features.feature_dim)
    model = Captioner(config).to(world.device)
    optimizer = make_optimizer(settings, model.parameters())
    fp = checkpoint.fingerprint(vars(settings), seed, features, captions)
    chosen = training_precision.choose(settings, model, by_length, world.device)
    log.info(
        "%s attention captioner, %.1fM parameters, on %s%s in %s; features %s (L=%d, D=%d)",
        settings.attention,
        sum(p.numel() for p in model.parameters()) / 1e6,
        world.device,
        f" x {world.size} processes" if world.size > 1 else "",
        chosen,
        features.path,
        config.num_locations,
        config.feature_dim,
    )
    return Run(
        settings,
        seed,
        world,
        captions,
        features,
        by_length,
        val,
        model,
        data_parallel(model, world),
        optimizer,
        checkpoint_path,
        fp,
        chosen,
        progress,
        Path(files.captions_csv),
    )


def make_optimizer(settings: Settings, params: Iterator[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam in its fused form (one kernel for all parameters: 4x faster steps on 2 CPU cores), or RMSprop."""
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.learning_rate, fused=True)
    if settings.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=settings.learning_rate, foreach=True)
    raise SatError(f"unknown optimizer {settings.optimizer!r}; choose adam or rmsprop")


def data_parallel(model: Captioner, world: World) -> torch.nn.Module:
    """``model`` wrapped to average its gradients over the processes (itself in a single process)."""
    if world.size == 1:
        return model
    return DistributedDataParallel(model, device_ids=[world.device.index] if world.device.type == "cuda" else None)
