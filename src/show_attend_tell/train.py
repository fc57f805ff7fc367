"""Train a soft or hard attention captioner as in the paper (section 4.3), resumably.

Minibatches hold captions of one length (the length dictionary), so no step computes on padding.
After every epoch the model is measured on the validation split (``validation``: teacher-forced NLL,
and real decoding scored with BLEU-4 and CIDEr); the epoch best by ``select_on`` is kept and training
stops when ``patience`` epochs bring no better one (the paper's early stopping). A checkpoint
(``checkpoint``) is written after every epoch and when the job is asked to stop (SIGTERM, as a
cluster does before pre-empting; Ctrl-C); the next run continues from it, giving the same model as
an uninterrupted run.

Under torchrun the processes split every minibatch between them (DDP; see ``distributed``), so a
checkpoint holds no trace of how many there were and may be continued by any number of processes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel

from . import checkpoint, epoch_log, heap, precision, training_precision, validation, weight_average
from .atomic import atomic_output, remove
from .checkpoint import Progress
from .data import FEATURE_KEYS, Captions, Features, length_batches, read_encoded, read_length_dictionary
from .distributed import World, join, leave
from .errors import SatError
from .figures import plot_curves
from .minibatch import backward, seed_step
from .model import Captioner, save_model
from .progress import progress_bar
from .settings import Settings
from .stopping import StopRequested

log = logging.getLogger(__name__)

LOG_COLUMNS = epoch_log.COLUMNS


def _make_optimizer(settings: Settings, params: Iterator[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam in its fused form (one kernel for all parameters: 4x faster steps on 2 CPU cores), or RMSprop."""
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.learning_rate, fused=True)
    if settings.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=settings.learning_rate, foreach=True)
    raise SatError(f"unknown optimizer {settings.optimizer!r}; choose adam or rmsprop")


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

    def autocast(self) -> contextlib.AbstractContextManager:
        return precision.autocast(self.world.device, self.precision)


def train(
    captions_h5: str | Path,
    vocab_csv: str | Path,
    captions_csv: str | Path,
    lengths_json: str | Path,
    features_h5: str | Path,
    *,
    model_out: str | Path,
    log_csv: str | Path,
    curves_png: str | Path,
    checkpoint: str | Path,
    settings: Settings,
    seed: int = 0,
    device: str = "auto",
    declared_gpus: int = 0,
    threads: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Train, select the best epoch on validation, and write the model, its log and its curves.

    Run by torchrun, every process calls this; rank 0 alone logs and writes. ``threads`` are shared
    among the processes of a node.
    """
    world = join(device, declared_gpus)
    try:
        files = Inputs(captions_h5, vocab_csv, captions_csv, lengths_json, features_h5)
        run = _start(files, settings, seed, world, Path(checkpoint), threads=threads, progress=progress and world.main)
        state = _fit(run)
        table = pd.DataFrame(state.rows, columns=list(LOG_COLUMNS))
        if world.main:
            _write_model(model_out, run, state)
            with atomic_output(log_csv) as tmp:
                table.to_csv(tmp, index=False)
            plot_curves(table, curves_png, title=f"{settings.attention} attention", select_on=settings.select_on)
            remove(run.checkpoint)  # done: a later run (say with other settings) starts afresh
        world.barrier()
        return table
    finally:
        leave(world)


class Inputs(NamedTuple):
    """The files a training job reads: the encode, vocab, prepare, lengths and features stages' outputs."""

    captions_h5: str | Path
    vocab_csv: str | Path
    captions_csv: str | Path
    lengths_json: str | Path
    features_h5: str | Path


def _start(
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
    optimizer = _make_optimizer(settings, model.parameters())
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
    )


def _fit(run: Run) -> Progress:
    """Epochs until ``max_epochs`` or patience runs out, from the checkpoint when there is one."""
    s = run.settings
    state = (
        checkpoint.load(run.checkpoint, run.fingerprint, run.model, run.optimizer)
        if run.checkpoint.exists()
        else Progress()
    )
    if state.average is not None:  # checkpoints are read onto the CPU
        state.average = {k: v.to(run.world.device) for k, v in state.average.items()}
    with StopRequested().installed() as stop:
        while state.epoch < s.max_epochs and not _patience_spent(state, s):
            if _train_epoch(run, state, stop):
                checkpoint.save(run.checkpoint, run.fingerprint, run.model, run.optimizer, state, run.world)
                raise SatError(
                    f"stopped by {stop.describe()} in epoch {state.epoch + 1}; "
                    f"checkpoint saved to {run.checkpoint}: run again to continue"
                )
            _end_epoch(run, state)
            checkpoint.save(run.checkpoint, run.fingerprint, run.model, run.optimizer, state, run.world)
    run.features.close()
    log.info(
        "best epoch %d: validation %s %.4f",
        state.best_epoch + 1,
        s.select_on,
        abs(state.best_score) if s.select_on == "nll" else state.best_score,
    )
    return state


def data_parallel(model: Captioner, world: World) -> torch.nn.Module:
    """``model`` wrapped to average its gradients over the processes (itself in a single process)."""
    if world.size == 1:
        return model
    return DistributedDataParallel(model, device_ids=[world.device.index] if world.device.type == "cuda" else None)


def _patience_spent(state: Progress, settings: Settings) -> bool:
    return state.best_epoch >= 0 and state.epoch - 1 - state.best_epoch >= settings.patience


def _train_epoch(run: Run, state: Progress, stop: StopRequested) -> bool:
    """The batches of epoch ``state.epoch`` from ``state.step`` on, accumulating its statistics in ``state.sums``.

    True when a process was asked to stop: all stop after the same batch.
    """
    s, world = run.settings, run.world
    lr = s.learning_rate * s.lr_decay**state.epoch
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    batches = length_batches(run.by_length, s.batch_size, run.seed, state.epoch)
    sums = state.sums or dict.fromkeys(("nll", "reg", "entropy", "captions", "words", "seconds"), 0.0)
    run.net.train()
    bar = progress_bar(
        total=len(batches), initial=state.step, desc=f"epoch {state.epoch + 1}", unit="batch", enabled=run.progress
    )
    with bar:
        for rows in batches[state.step :]:
            t0 = time.perf_counter()
            seed_step(run.seed, state.epoch, state.step, world.rank)
            run.optimizer.zero_grad(set_to_none=True)
            step = backward(
                run.net,
                run.captions,
                run.features,
                rows,
                s,
                state.baseline,
                world,
                stop.signal is not None,
                run.precision,
            )
            if not math.isfinite(step.loss):
                raise SatError(
                    f"the loss became {step.loss} in epoch {state.epoch + 1}, batch {state.step + 1} "
                    f"(captions of {step.words // step.captions - 1} words); lower train.learning_rate "
                    "or set train.clip_norm. The checkpoint of the last completed epoch is kept."
                )
            if s.clip_norm:
                torch.nn.utils.clip_grad_norm_(run.net.parameters(), s.clip_norm)
            run.optimizer.step()
            if s.ema_decay:
                weight_average.update(state, run.model, s.ema_decay)
            if s.attention == "hard":
                d, mean = s.baseline_decay, step.log_likelihood / step.words
                state.baseline = mean if state.baseline is None else d * state.baseline + (1 - d) * mean
            for key, value in (
                ("nll", step.nll),
                ("reg", step.attention),
                ("entropy", step.entropy),
                ("captions", step.captions),
                ("words", step.words),
            ):
                sums[key] += value
            sums["seconds"] += time.perf_counter() - t0
            state.step += 1
            state.sums = sums
            bar.update()
            bar.set_postfix(nll_per_word=f"{sums['nll'] / sums['words']:.3f}", refresh=False)
            if step.stop:
                return True
    return False


def _end_epoch(run: Run, state: Progress) -> None:
    """Measure the epoch on validation, keep the best weights, append the log row, move to the next epoch."""
    s = run.settings
    t0 = time.perf_counter()
    with run.autocast(), weight_average.averaged(run.model, state.average):
        measured = validation.measure(
            run.model,
            run.captions,
            run.features,
            run.val,
            beam_size=s.val_beam_size,
            max_length=s.max_decode_length,
            batch_size=s.decode_batch_size,
            world=run.world,
        )
        score = validation.selection_score(measured, s.select_on)
        best = score > state.best_score
        if best:
            state.best_score, state.best_epoch = score, state.epoch
            state.best_state = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
    row = epoch_log.epoch_row(
        state,
        s,
        measured,
        best=best,
        val_seconds=time.perf_counter() - t0,
        device=run.world.device.type,
        precision=run.precision,
    )
    state.rows.append(row)
    epoch_log.report(row)
    state.epoch, state.step, state.sums = state.epoch + 1, 0, {}


def _write_model(path: str | Path, run: Run, state: Progress) -> None:
    """The selected weights with everything needed to use them: shapes, vocabulary, features, how they were made."""
    best = state.rows[state.best_epoch]
    # Nothing timed: the same config and seed give the same file.
    save_model(
        path,
        run.model,
        state.best_state,
        vocab=run.captions.vocab,
        features={k: run.features.attrs.get(k) for k in FEATURE_KEYS},
        settings=vars(run.settings),
        seed=run.seed,
        epoch=state.best_epoch + 1,
        selected_on=run.settings.select_on,
        val_nll_per_word=best["val_nll_per_word"],
        val_bleu4=best["val_bleu4"],
        val_cider=best["val_cider"],
        device=run.world.device.type,
        precision=run.precision,
    )
