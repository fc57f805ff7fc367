"""Train a soft or hard attention captioner as in the paper (section 4.3), resumably.

Minibatches hold captions of one length (the length dictionary), so no step computes on padding.
After every epoch the model captions the validation images by real greedy decoding and is scored
with BLEU-4; the best epoch is kept and training stops when ``patience`` epochs bring no better one
(the paper's early stopping on BLEU). A checkpoint is written after every epoch and when the job is
asked to stop (SIGTERM, as a cluster does before pre-empting; Ctrl-C): it lives outside the rule's
outputs, which Snakemake deletes before a job starts, and the next run continues from it, giving
the same model as an uninterrupted run.

Under torchrun the processes split every minibatch between them (DDP; see ``distributed``), so a
checkpoint holds no trace of how many there were and may be continued by any number of processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel

from . import objectives
from .atomic import atomic_output, remove
from .data import (
    FEATURE_KEYS,
    Captions,
    Features,
    length_batches,
    read_encoded,
    read_length_dictionary,
    references,
    teacher_batch,
)
from .decode import beam_search
from .distributed import World, join, leave
from .errors import SatError
from .model import MODEL_FORMAT, Captioner, ModelConfig
from .progress import progress_bar

log = logging.getLogger(__name__)

MODEL_KEYS = ("attention", "embed_dim", "hidden_dim", "attention_dim", "dropout")
LOG_COLUMNS = ("epoch", "steps", "words", "nll_per_caption", "nll_per_word", "attention_reg", "entropy", "baseline",
               "val_bleu4", "best", "learning_rate", "tokens_per_s", "train_seconds", "val_seconds")


@dataclass(frozen=True)
class Settings:
    """Training hyperparameters (config key `train`, merged with the model's own keys)."""

    attention: str = "soft"
    embed_dim: int = 512
    hidden_dim: int = 1800
    attention_dim: int = 512
    dropout: float = 0.5
    optimizer: str = "adam"
    learning_rate: float = 4e-4
    lr_decay: float = 1.0  # learning rate multiplied by this after every epoch
    batch_size: int = 64
    max_epochs: int = 20
    patience: int = 4  # epochs without a better validation BLEU-4 before stopping
    clip_norm: float | None = 5.0
    alpha_c: float = 1.0  # lambda of the doubly stochastic penalty (eq. 14)
    lambda_r: float = 1.0  # hard attention: weight of the REINFORCE term (eq. 12)
    lambda_e: float = 0.002  # hard attention: weight of the entropy bonus
    semi_sampling_p: float = 0.5  # hard attention: probability an image uses the expected context
    baseline_decay: float = 0.9  # hard attention: b <- decay * b + (1 - decay) * log p(y | s, a)
    max_decode_length: int = 30
    val_beam_size: int = 1  # beam size of the validation decoding that selects the model (1: greedy)
    val_images: int | None = None  # score only the first N validation images (None: all)
    decode_batch_size: int = 250
    amp: bool = False  # bfloat16 autocast on CUDA
    features_memory_gb: float = 8.0  # hold the features in memory up to this size (per node, shared by its processes)

    @classmethod
    def from_config(cls, settings: dict[str, Any]) -> Settings:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(settings) - known)
        if unknown:
            raise SatError(f"unknown training setting(s) {unknown}; known: {sorted(known)}")
        return cls(**settings)

    def model_config(self, vocab_size: int, num_locations: int, feature_dim: int) -> ModelConfig:
        return ModelConfig(vocab_size, num_locations, feature_dim,
                           **{k: getattr(self, k) for k in MODEL_KEYS})


@dataclass
class Progress:
    """Everything a checkpoint must hold to continue exactly where training stopped."""

    epoch: int = 0  # the epoch under way (or next)
    step: int = 0  # batches of it already done
    baseline: float | None = None  # hard attention: set from the first batch, then a moving average
    best_bleu4: float = -1.0
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    rows: list[dict] = field(default_factory=list)
    sums: dict[str, float] = field(default_factory=dict)  # running sums of the epoch under way


class StopRequested:
    """Turns SIGTERM and SIGINT into a flag checked between batches, so a checkpoint is never torn."""

    def __init__(self) -> None:
        self.signal: int | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequested]:
        def handler(signum: int, frame: object) -> None:
            self.signal = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def fingerprint(settings: Settings, seed: int, features: Features, captions: Captions) -> dict[str, Any]:
    """What a checkpoint must agree on to be continued (the model's shapes follow from these)."""
    return {
        "settings": vars(settings),
        "seed": seed,
        "features": {k: features.attrs.get(k) for k in FEATURE_KEYS},
        "captions": hashlib.sha256(captions.tokens.tobytes()).hexdigest(),
    }


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            keys += _differences(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            keys.append(f"{prefix}{k} ({a.get(k)!r} then, {b.get(k)!r} now)")
    return keys


def _make_optimizer(settings: Settings, params: Iterator[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.learning_rate)
    if settings.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=settings.learning_rate)
    raise SatError(f"unknown optimizer {settings.optimizer!r}; choose adam or rmsprop")


def bleu4(hypotheses: dict[int, str], refs: dict[int, list[str]]) -> float:
    """Corpus BLEU-4 (coco-caption's scorer, 0-1) of tokenised hypotheses against their references."""
    from pycocoevalcap.bleu.bleu import Bleu

    keys = sorted(hypotheses)
    score, _ = Bleu(4).compute_score({k: refs[k] for k in keys}, {k: [hypotheses[k]] for k in keys}, verbose=0)
    return float(score[3])


def validate(model: Captioner, features: Features, refs: dict[int, list[str]], vocab: list[str],
             settings: Settings, world: World) -> float:
    """Validation BLEU-4 of real greedy decoding (never teacher-forced argmax), the images shared among processes."""
    model.eval()
    images = np.array(sorted(refs)[: settings.val_images], dtype=np.int64)[world.rank :: world.size]
    hypotheses = {}
    for start in range(0, len(images), settings.decode_batch_size):
        batch = images[start : start + settings.decode_batch_size]
        with _autocast(world.device, settings.amp):
            decoded = beam_search(model, features[batch].to(world.device).float(), vocab,
                                  beam_size=settings.val_beam_size, max_length=settings.max_decode_length)
        hypotheses.update({int(i): " ".join(vocab[w] for w in ws) for i, ws in zip(batch, decoded.tokens)})
    model.train()
    return bleu4(world.merge(hypotheses), refs)


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


def seed_step(seed: int, epoch: int, step: int, rank: int) -> None:
    """Seed the step's randomness (dropout, hard attention's samples) from where it is, not from what came before.

    A resumed run, with any number of processes, thus draws what an uninterrupted one would; each
    process draws its own.
    """
    torch.manual_seed(int(np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1)[0]))


def _save_checkpoint(path: Path, fp: dict, model: Captioner, optimizer: torch.optim.Optimizer,
                     progress: Progress, world: World) -> None:
    """Rank 0 writes (every process holds the same weights and optimizer state); the others wait for it."""
    if world.main:
        state = {"fingerprint": fp, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "progress": vars(progress)}
        with atomic_output(path) as tmp:
            torch.save(state, tmp)
    world.barrier()


def _load_checkpoint(path: Path, fp: dict, model: Captioner, optimizer: torch.optim.Optimizer) -> Progress:
    try:
        # On the CPU; the model and optimizer copy to their device when loaded.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # any unreadable file means the same thing
        raise SatError(f"cannot read the checkpoint {path} ({e}); delete it to train from the start") from e
    changed = _differences(state["fingerprint"], fp)
    if changed:
        raise SatError(
            f"the checkpoint {path} was written by a run with other settings or data:\n  "
            + "\n  ".join(changed)
            + "\nRestore those settings to continue it, or delete it to train from the start."
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    progress = Progress(**state["progress"])
    log.info("resuming from %s: epoch %d, batch %d", path, progress.epoch + 1, progress.step)
    return progress


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
    """Train, select the best epoch on validation BLEU-4, and write the model, its log and its curves.

    Run by torchrun, every process calls this; rank 0 alone logs and writes. ``threads`` are shared
    among the processes of a node.
    """
    world = join(device, declared_gpus)
    try:
        return _train(captions_h5, vocab_csv, captions_csv, lengths_json, features_h5, model_out, log_csv, curves_png,
                      Path(checkpoint), settings, seed, world, threads, progress and world.main)
    finally:
        leave(world)


def _train(captions_h5: str | Path, vocab_csv: str | Path, captions_csv: str | Path, lengths_json: str | Path,
           features_h5: str | Path, model_out: str | Path, log_csv: str | Path, curves_png: str | Path,
           checkpoint: Path, settings: Settings, seed: int, world: World, threads: int | None,
           progress: bool) -> pd.DataFrame:
    if threads:
        torch.set_num_threads(max(1, threads // world.local_size))
    captions = read_encoded(captions_h5, vocab_csv)
    # Every process holds its own copy: the node's budget is shared. Read per batch, the file's pages
    # are cached once by the OS for all of them.
    features = Features(features_h5, settings.features_memory_gb / world.local_size)
    features.check_images(captions)
    by_length = read_length_dictionary(lengths_json)
    refs = references(captions_csv, "val")
    if not refs:
        raise SatError(f"{captions_csv} has no validation captions to select the model on")

    torch.manual_seed(seed)
    config = settings.model_config(len(captions.vocab), features.num_locations, features.feature_dim)
    model = Captioner(config).to(world.device)
    net = data_parallel(model, world)
    optimizer = _make_optimizer(settings, model.parameters())
    fp = fingerprint(settings, seed, features, captions)
    state = _load_checkpoint(checkpoint, fp, model, optimizer) if checkpoint.exists() else Progress()
    log.info("%s attention captioner, %.1fM parameters, on %s%s; features %s (L=%d, D=%d)", settings.attention,
             sum(p.numel() for p in model.parameters()) / 1e6, world.device,
             f" x {world.size} processes" if world.size > 1 else "", features.path, config.num_locations,
             config.feature_dim)

    with StopRequested().installed() as stop:
        while state.epoch < settings.max_epochs and not _patience_spent(state, settings):
            stopped = _train_epoch(net, optimizer, captions, features, by_length, settings, seed, state, world, stop,
                                   progress)
            if stopped:
                _save_checkpoint(checkpoint, fp, model, optimizer, state, world)
                name = signal.Signals(stop.signal).name if stop.signal is not None else "a signal to another process"
                raise SatError(f"stopped by {name} in epoch {state.epoch + 1}; "
                               f"checkpoint saved to {checkpoint}: run again to continue")
            _end_epoch(model, features, refs, captions.vocab, settings, state, world)
            _save_checkpoint(checkpoint, fp, model, optimizer, state, world)
    features.close()

    table = pd.DataFrame(state.rows, columns=list(LOG_COLUMNS))
    if world.main:
        _write_model(model_out, config, state, captions.vocab, features, settings, seed)
        with atomic_output(log_csv) as tmp:
            table.to_csv(tmp, index=False)
        plot_curves(table, curves_png, title=f"{settings.attention} attention")
        remove(checkpoint)  # done: a later run (say with other settings) starts afresh
    world.barrier()
    log.info("best epoch %d: validation BLEU-4 %.4f", state.best_epoch + 1, state.best_bleu4)
    return table


def data_parallel(model: Captioner, world: World) -> torch.nn.Module:
    """``model`` wrapped to average its gradients over the processes (itself in a single process)."""
    if world.size == 1:
        return model
    return DistributedDataParallel(model, device_ids=[world.device.index] if world.device.type == "cuda" else None)


def _patience_spent(state: Progress, settings: Settings) -> bool:
    return state.best_epoch >= 0 and state.epoch - 1 - state.best_epoch >= settings.patience


def _train_epoch(net: torch.nn.Module, optimizer: torch.optim.Optimizer, captions: Captions, features: Features,
                 by_length: dict[int, np.ndarray], settings: Settings, seed: int, state: Progress,
                 world: World, stop: StopRequested, progress: bool) -> bool:
    """The batches of epoch ``state.epoch`` from ``state.step`` on, accumulating its statistics in ``state.sums``.

    True when a process was asked to stop: all stop after the same batch.
    """
    lr = settings.learning_rate * settings.lr_decay**state.epoch
    for group in optimizer.param_groups:
        group["lr"] = lr
    batches = length_batches(by_length, settings.batch_size, seed, state.epoch)
    sums = state.sums or dict.fromkeys(("nll", "reg", "entropy", "captions", "words", "seconds"), 0.0)
    net.train()
    bar = progress_bar(total=len(batches), initial=state.step, desc=f"epoch {state.epoch + 1}", unit="batch",
                       enabled=progress)
    with bar:
        for rows in batches[state.step :]:
            t0 = time.perf_counter()
            seed_step(seed, state.epoch, state.step, world.rank)
            optimizer.zero_grad(set_to_none=True)
            step = backward(net, captions, features, rows, settings, state.baseline, world, stop.signal is not None)
            if not math.isfinite(step.loss):
                raise SatError(f"the loss became {step.loss} in epoch {state.epoch + 1}, batch {state.step + 1} "
                               f"(captions of {step.words // step.captions - 1} words); lower train.learning_rate "
                               "or set train.clip_norm. The checkpoint of the last completed epoch is kept.")
            if settings.clip_norm:
                torch.nn.utils.clip_grad_norm_(net.parameters(), settings.clip_norm)
            optimizer.step()
            if settings.attention == "hard":
                d, mean = settings.baseline_decay, step.log_likelihood / step.captions
                state.baseline = mean if state.baseline is None else d * state.baseline + (1 - d) * mean
            for key, value in (("nll", step.nll), ("reg", step.attention), ("entropy", step.entropy),
                               ("captions", step.captions), ("words", step.words)):
                sums[key] += value
            sums["seconds"] += time.perf_counter() - t0
            state.step += 1
            state.sums = sums
            bar.update()
            bar.set_postfix(nll_per_word=f"{sums['nll'] / sums['words']:.3f}", refresh=False)
            if step.stop:
                return True
    return False


@dataclass(frozen=True)
class Step:
    """One minibatch's sums over every process: the terms summed over its captions (not averaged)."""

    loss: float  # the global batch's mean loss
    nll: float
    attention: float
    entropy: float
    log_likelihood: float
    captions: int
    words: int
    stop: bool  # some process was asked to stop


def backward(net: torch.nn.Module, captions: Captions, features: Features, rows: np.ndarray, settings: Settings,
             baseline: float | None, world: World, stop: bool = False) -> Step:
    """Gradients of the mean loss over the global minibatch ``rows``, of which this process computes its share.

    Hard attention's baseline None (the first batch) is the global batch's mean log-likelihood.
    """
    mine, weight = world.share(rows)
    device = world.device
    inputs, targets, mask = (t.to(device, non_blocking=True) for t in teacher_batch(captions, mine))
    feats = features[captions.image_index[mine]].to(device, non_blocking=True).float()
    hard = settings.attention == "hard"
    sample_rows = (torch.rand(len(mine)) >= settings.semi_sampling_p).to(device) if hard else None
    with _autocast(device, settings.amp):
        out = net(feats, inputs, sample_rows=sample_rows)
    real = float(weight > 0)  # 0: this process only joins the reduction
    if hard:
        if baseline is None:
            ll = objectives.word_log_likelihood(out.logits, targets, mask)
            total, count = world.sum([float(ll.detach().sum()) * real, len(mine) * real])
            baseline = total / count
        terms = objectives.hard_objective(out, targets, mask, baseline=baseline, lambda_r=settings.lambda_r,
                                          lambda_e=settings.lambda_e, alpha_c=settings.alpha_c)
    else:
        terms = objectives.soft_objective(out, targets, mask, settings.alpha_c)
    n = len(mine) * real
    loss, nll, attention, entropy, ll_sum, n_all, words, stops = world.sum([
        float(terms.loss.detach()) * weight / world.size, float(terms.nll) * n, float(terms.attention) * n,
        float(terms.entropy) * n, float(terms.log_likelihoods.sum()) * real, n, float(mask.sum()) * real, float(stop),
    ])
    if math.isfinite(loss):
        (terms.loss * weight).backward()
    return Step(loss, nll, attention, entropy, ll_sum, int(n_all), int(words), stops > 0)


def _end_epoch(model: Captioner, features: Features, refs: dict[int, list[str]], vocab: list[str],
               settings: Settings, state: Progress, world: World) -> None:
    """Score the epoch on validation, keep the best weights, append the log row, move to the next epoch."""
    t0 = time.perf_counter()
    score = validate(model, features, refs, vocab, settings, world)
    best = score > state.best_bleu4
    if best:
        state.best_bleu4, state.best_epoch = score, state.epoch
        state.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    s = state.sums
    state.rows.append({
        "epoch": state.epoch + 1,
        "steps": state.step,
        "words": int(s["words"]),
        "nll_per_caption": s["nll"] / s["captions"],
        "nll_per_word": s["nll"] / s["words"],
        "attention_reg": s["reg"] / s["captions"],
        "entropy": s["entropy"] / s["captions"],
        "baseline": state.baseline if settings.attention == "hard" else float("nan"),
        "val_bleu4": score,
        "best": best,
        "learning_rate": settings.learning_rate * settings.lr_decay**state.epoch,
        "tokens_per_s": s["words"] / s["seconds"],
        "train_seconds": s["seconds"],
        "val_seconds": time.perf_counter() - t0,
    })
    log.info("epoch %d: %.3f nats/word, attention penalty %.2f, validation BLEU-4 %.4f%s, %.0f tokens/s",
             state.epoch + 1, state.rows[-1]["nll_per_word"], state.rows[-1]["attention_reg"], score, " (best)" if best else "",
             state.rows[-1]["tokens_per_s"])
    state.epoch, state.step, state.sums = state.epoch + 1, 0, {}


def _write_model(path: str | Path, config: ModelConfig, state: Progress, vocab: list[str], features: Features,
                 settings: Settings, seed: int) -> None:
    document = {
        "format": MODEL_FORMAT,
        "config": config.to_dict(),
        "state_dict": state.best_state,
        "vocab": vocab,
        "features": {k: features.attrs.get(k) for k in FEATURE_KEYS},
        "settings": vars(settings),
        "seed": seed,
        "epoch": state.best_epoch + 1,
        "val_bleu4": state.best_bleu4,
    }
    with atomic_output(path) as tmp:
        torch.save(document, tmp)


def plot_curves(table: pd.DataFrame, path: str | Path, title: str) -> None:
    """Learning curves: training NLL per word, the attention penalty, validation BLEU-4 (best epoch marked)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), constrained_layout=True)
    panels = (("nll_per_word", "training NLL (nats/word)"), ("attention_reg", "sum_i (1 - sum_t alpha_ti)^2"),
              ("val_bleu4", "validation BLEU-4 (real decoding)"))
    for ax, (column, label) in zip(axes, panels):
        ax.plot(table["epoch"], table[column], marker="o", ms=3)
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    best = table[table["best"].astype(bool)].tail(1)
    if not best.empty:
        axes[2].scatter(best["epoch"], best["val_bleu4"], s=80, facecolors="none", edgecolors="C3",
                        label=f"selected: epoch {int(best['epoch'].iloc[0])}")
        axes[2].legend(fontsize=8)
    fig.suptitle(title)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
