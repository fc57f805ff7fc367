"""The training log: one row per epoch (``train_log.csv``), what it measured in training and on validation."""

from __future__ import annotations

import logging

from .checkpoint import Progress
from .settings import Settings

log = logging.getLogger("show_attend_tell.train")

COLUMNS = (
    "epoch",
    "steps",
    "words",
    "nll_per_caption",
    "nll_per_word",
    "attention_reg",
    "entropy",
    "entropy_per_word",
    "baseline",
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
    return {
        "epoch": state.epoch + 1,
        "steps": state.step,
        "words": int(sums["words"]),
        "nll_per_caption": sums["nll"] / sums["captions"],
        "nll_per_word": sums["nll"] / sums["words"],
        "attention_reg": sums["reg"] / sums["captions"],
        "entropy": sums["entropy"] / sums["captions"],
        "entropy_per_word": sums["entropy"] / sums["words"],
        "baseline": state.baseline if settings.attention == "hard" else float("nan"),
        "val_nll_per_word": measured["nll_per_word"],
        "val_bleu4": measured["bleu4"],
        "val_cider": measured["cider"],
        "best": best,
        "learning_rate": settings.learning_rate * settings.lr_decay**state.epoch,
        "tokens_per_s": sums["words"] / sums["seconds"],
        "train_seconds": sums["seconds"],
        "val_seconds": val_seconds,
        "device": device,
        "precision": precision,
    }


def report(row: dict) -> None:
    log.info(
        "epoch %d: %.3f nats/word (validation %.3f), attention penalty %.2f, entropy %.2f nats/word, "
        "validation BLEU-4 %.4f, CIDEr %.4f%s, %.0f tokens/s",
        row["epoch"],
        row["nll_per_word"],
        row["val_nll_per_word"],
        row["attention_reg"],
        row["entropy_per_word"],
        row["val_bleu4"],
        row["val_cider"],
        " (best)" if row["best"] else "",
        row["tokens_per_s"],
    )
