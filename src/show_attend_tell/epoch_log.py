"""The training log: one row per epoch (``train_log.csv``), what it measured in training and on validation."""

from __future__ import annotations

import logging

from .checkpoint import Progress
from .settings import Settings

log = logging.getLogger("show_attend_tell.train")

COLUMNS = (
    "epoch",
    "objective",
    "steps",
    "words",
    "nll_per_caption",
    "nll_per_word",
    "attention_reg",
    "entropy",
    "entropy_per_word",
    "baseline",
    "reward",
    "val_nll_per_word",
    "val_bleu4",
    "val_cider",
    "best",
    "learning_rate",
    "tokens_per_s",
    "train_seconds",
    "val_seconds",
    "device",
    "precision",
)


def epoch_row(
    state: Progress,
    settings: Settings,
    measured: dict[str, float],
    *,
    best: bool,
    val_seconds: float,
    device: str,
    precision: str,
) -> dict:
    """The row of the epoch ``state`` has just trained (its sums) and ``measured`` on validation."""
    sums = state.sums
    critical = state.self_critical_from is not None
    return {
        "epoch": state.epoch + 1,
        "objective": "self_critical" if critical else "cross_entropy",
        "steps": state.step,
        "words": int(sums["words"]),
        "nll_per_caption": sums["nll"] / sums["captions"],
        "nll_per_word": sums["nll"] / sums["words"],
        "attention_reg": sums["reg"] / sums["captions"],
        "entropy": sums["entropy"] / sums["captions"],
        "entropy_per_word": sums["entropy"] / sums["words"],
        "baseline": state.baseline if settings.attention == "hard" and not critical else float("nan"),
        "reward": sums["reward"] / sums["captions"] if critical else float("nan"),
        "val_nll_per_word": measured["nll_per_word"],
        "val_bleu4": measured["bleu4"],
        "val_cider": measured["cider"],
        "best": best,
        "learning_rate": learning_rate(state, settings),
        "tokens_per_s": sums["words"] / sums["seconds"],
        "train_seconds": sums["seconds"],
        "val_seconds": val_seconds,
        "device": device,
        "precision": precision,
    }


def learning_rate(state: Progress, settings: Settings) -> float:
    """Epoch ``state.epoch``'s step size: decaying per cross-entropy epoch, constant in self-critical ones."""
    if state.self_critical_from is not None:
        return settings.self_critical_learning_rate
    return settings.learning_rate * settings.lr_decay**state.epoch


def report(row: dict) -> None:
    if row["objective"] == "self_critical":
        trained = f"self-critical, samples' CIDEr-D {row['reward']:.3f}"
    else:
        trained = f"{row['nll_per_word']:.3f} nats/word"
    log.info(
        "epoch %d: %s (validation %.3f nats/word), attention penalty %.2f, entropy %.2f nats/word, "
        "validation BLEU-4 %.4f, CIDEr %.4f%s, %.0f tokens/s",
        row["epoch"],
        trained,
        row["val_nll_per_word"],
        row["attention_reg"],
        row["entropy_per_word"],
        row["val_bleu4"],
        row["val_cider"],
        " (best)" if row["best"] else "",
        row["tokens_per_s"],
    )
