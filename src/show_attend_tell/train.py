"""Train a soft or hard attention captioner as in the paper (section 4.3), resumably.

Minibatches hold captions of one length (the length dictionary), so no step computes on padding.
After every epoch the model is measured on the validation split (``validation``: teacher-forced NLL,
and real decoding scored with BLEU-4 and CIDEr); the epoch best by ``select_on`` is kept and training
stops when ``patience`` epochs bring no better one (the paper's early stopping). Then, if asked for,
``self_critical_epochs`` of fine-tuning on the CIDEr-D of sampled captions (``self_critical``) follow from
the selected weights, validated the same way; the best of all epochs is kept. A checkpoint
(``checkpoint``) is written after every epoch and when the job is asked to stop (SIGTERM, as a
cluster does before pre-empting; Ctrl-C); the next run continues from it, giving the same model as
an uninterrupted run.

Under torchrun the processes split every minibatch between them (DDP; see ``distributed``), so a
checkpoint holds no trace of how many there were and may be continued by any number of processes.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import pandas as pd
import torch

from . import checkpoint, epoch_log, self_critical, training_job, validation, weight_average
from .atomic import atomic_output, check_writable, remove
from .checkpoint import Progress
from .data import FEATURE_KEYS, length_batches
from .distributed import join, leave
from .errors import SatError
from .figures import plot_curves
from .minibatch import backward, seed_step
from .model import save_model
from .progress import progress_bar
from .settings import Settings
from .stopping import StopRequested
from .training_job import Inputs, Run

log = logging.getLogger(__name__)

LOG_COLUMNS = epoch_log.COLUMNS


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
        if world.main:  # the outputs first, so that a place that takes no files fails now, not after training
            for output in (model_out, log_csv, curves_png, checkpoint):
                check_writable(output)
        files = Inputs(captions_h5, vocab_csv, captions_csv, lengths_json, features_h5)
        run = training_job.start(
            files, settings, seed, world, Path(checkpoint), threads=threads, progress=progress and world.main
        )
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
        while objective := _objective(state, s):
            if objective == "self_critical" and state.self_critical_from is None:
                _begin_self_critical(run, state)
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


def _patience_spent(state: Progress, settings: Settings) -> bool:
    return state.best_epoch >= 0 and state.epoch - 1 - state.best_epoch >= settings.patience


def _objective(state: Progress, settings: Settings) -> str | None:
    """What the next epoch trains on: cross-entropy until max_epochs or patience, then self-critical; None: done."""
    if state.self_critical_from is None:
        if state.epoch < settings.max_epochs and not _patience_spent(state, settings):
            return "cross_entropy"
        return "self_critical" if settings.self_critical_epochs else None
    return "self_critical" if state.epoch < state.self_critical_from + settings.self_critical_epochs else None


def _begin_self_critical(run: Run, state: Progress) -> None:
    """Self-critical epochs start from the selected weights, with the optimizer's state and the average afresh."""
    log.info(
        "self-critical fine-tuning: %d epochs from epoch %d's weights",
        run.settings.self_critical_epochs,
        state.best_epoch + 1,
    )
    state.self_critical_from = state.epoch
    run.model.load_state_dict(state.best_state)
    run.optimizer.state.clear()
    state.average, state.average_steps = None, 0


def _train_epoch(run: Run, state: Progress, stop: StopRequested) -> bool:
    """The batches of epoch ``state.epoch`` from ``state.step`` on, accumulating its statistics in ``state.sums``.

    True when a process was asked to stop: all stop after the same batch.
    """
    s, world = run.settings, run.world
    critical = state.self_critical_from is not None
    for group in run.optimizer.param_groups:
        group["lr"] = epoch_log.learning_rate(state, s)
    if critical:
        batches = self_critical.image_batches(run.train_images, s.self_critical_batch_size, run.seed, state.epoch)
    else:
        batches = length_batches(run.by_length, s.batch_size, run.seed, state.epoch)
    sums = state.sums or dict.fromkeys(("nll", "reg", "entropy", "captions", "words", "reward", "seconds"), 0.0)
    run.net.train()
    bar = progress_bar(
        total=len(batches), initial=state.step, desc=f"epoch {state.epoch + 1}", unit="batch", enabled=run.progress
    )
    with bar:
        for rows in batches[state.step :]:
            t0 = time.perf_counter()
            seed_step(run.seed, state.epoch, state.step, world.rank)
            run.optimizer.zero_grad(set_to_none=True)
            if critical:
                step = self_critical.backward(
                    run.net,
                    run.features,
                    rows,
                    run.critic,
                    run.captions.vocab,
                    s,
                    world,
                    stop.signal is not None,
                    run.precision,
                )
            else:
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
            if s.attention == "hard" and not critical:
                d, mean = s.baseline_decay, step.log_likelihood / step.words
                state.baseline = mean if state.baseline is None else d * state.baseline + (1 - d) * mean
            for key, value in (
                ("nll", step.nll),
                ("reg", step.attention),
                ("entropy", step.entropy),
                ("captions", step.captions),
                ("words", step.words),
                ("reward", step.reward),
            ):
                sums[key] += value
            sums["seconds"] += time.perf_counter() - t0
            state.step += 1
            state.sums = sums
            bar.update()
            if critical:
                bar.set_postfix(reward=f"{sums['reward'] / sums['captions']:.3f}", refresh=False)
            else:
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
