"""Table 1 of the paper beside ours: one row per trained dataset x model, as CSV and Markdown."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import pandas as pd

from .atomic import atomic_output
from .errors import SatError

log = logging.getLogger(__name__)

# Xu et al. (2015), Table 1: BLEU-1..4 (without brevity penalty) and METEOR, x100, VGG features.
PAPER = {
    ("flickr8k", "soft"): (67.0, 44.8, 29.9, 19.5, 18.93),
    ("flickr8k", "hard"): (67.0, 45.7, 31.4, 21.3, 20.30),
    ("flickr30k", "soft"): (66.7, 43.4, 28.8, 19.1, 18.49),
    ("flickr30k", "hard"): (66.9, 43.9, 29.6, 19.9, 18.46),
    ("coco", "soft"): (70.7, 49.2, 34.4, 24.3, 23.90),
    ("coco", "hard"): (71.8, 50.4, 35.7, 25.0, 23.04),
}
REPORTED = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor")


def row(
    dataset: str,
    model: str,
    metrics_csv: str | Path,
    attention_h5: str | Path,
    train_log_csv: str | Path,
    grounding_csv: str | Path | None = None,
) -> dict:
    """One Table 1 row: how it was made, our scores (x100) and the paper's where it has the row."""
    metrics = pd.read_csv(metrics_csv).iloc[0]
    train_log = pd.read_csv(train_log_csv)
    with h5py.File(attention_h5, "r") as f:
        a = f.attrs
        out = {
            "dataset": dataset,
            "model": model,
            "attention": a["attention"],
            "encoder": a["encoder"],
            "layer": a["layer"],
            "grid": "x".join(str(int(g)) for g in a["grid"]),
            "beam_size": int(a["beam_size"]),
            "split": metrics["split"],
            "images": int(metrics["images"]),
            "train_minutes": (train_log["train_seconds"].sum() + train_log["val_seconds"].sum()) / 60,
            "device": "+".join(train_log["device"].unique()),
            "precision": "+".join(train_log["precision"].unique()),
        }
    out |= {f"bleu_{n}": 100 * metrics[f"paper_bleu_{n}"] for n in range(1, 5)}
    # Metrics files written before the full-stop variant existed lack it: NaN, shown empty.
    out |= {f"bleu_{n}_full_stop": 100 * metrics.get(f"full_stop_bleu_{n}", float("nan")) for n in (1, 4)}
    out |= {
        "meteor": 100 * metrics["meteor"],
        "coco_bleu_4": 100 * metrics["bleu_4"],
        "rouge_l": 100 * metrics["rouge_l"],
        "cider": metrics["cider"],
    }
    paper = PAPER.get((dataset, str(out["attention"]))) if model in ("soft", "hard") else None
    out |= {f"xu2015_{k}": (v if paper else None) for k, v in zip(REPORTED, paper or [None] * 5)}
    if grounding_csv:
        g = pd.read_csv(grounding_csv).iloc[0]
        out |= {"naming": 100 * g["naming"], "pointing": 100 * g["pointing"]}
    return out


def table1(rows: list[dict], out_csv: str | Path, out_md: str | Path) -> pd.DataFrame:
    if not rows:
        raise SatError("no trained models to report")
    table = pd.DataFrame(rows)
    with atomic_output(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.2f")
    with atomic_output(out_md) as tmp:
        tmp.write_text(markdown(table), encoding="utf-8")
    log.info("Table 1 with %d rows written to %s and %s", len(table), out_csv, out_md)
    return table


def _pair(ours: float, paper: float | None) -> str:
    return f"{ours:.1f}" if paper is None or pd.isna(paper) else f"{ours:.1f} / {paper:g}"


def markdown(table: pd.DataFrame) -> str:
    """The table as people read it: ours / the paper's for each reported metric."""
    header = [
        "dataset",
        "model",
        "encoder (grid)",
        "training",
        "beam",
        "split",
        "BLEU-1",
        "BLEU-2",
        "BLEU-3",
        "BLEU-4",
        "METEOR",
        "BLEU-1 / 4 with '.'",
        "BLEU-4 (coco)",
        "CIDEr",
    ]
    grounded = "pointing" in table.columns
    if grounded:
        header += ["names shapes present", "pointing game"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in table.iterrows():
        cells = [
            r["dataset"],
            r["model"],
            f"{r['encoder']} {r['layer']} ({r['grid']})",
            f"{r['train_minutes']:.1f} min, {r['device']} {r['precision']}",
            str(r["beam_size"]),
            f"{r['split']} ({r['images']})",
        ]
        cells += [_pair(r[k], r[f"xu2015_{k}"]) for k in REPORTED]
        cells += [
            "" if pd.isna(r["bleu_1_full_stop"]) else f"{r['bleu_1_full_stop']:.1f} / {r['bleu_4_full_stop']:.1f}",
            f"{r['coco_bleu_4']:.1f}",
            f"{r['cider']:.3f}",
        ]
        if grounded:
            cells += [
                "" if pd.isna(r["naming"]) else f"{r['naming']:.1f}%",
                "" if pd.isna(r["pointing"]) else f"{r['pointing']:.1f}%",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "",
        "Ours / Xu et al. (2015) Table 1 where the paper has the row (its numbers use VGG19 conv5_4 features).",
        "Training: minutes of training and validation epochs (train_log.csv), on what device and in what precision.",
        "BLEU-1..4 are without the brevity penalty, as the paper reports them; BLEU-4 (coco) is coco-caption's, "
        "with it. All on a 0-100 scale except CIDEr; PTB-tokenised by pycocoevalcap, against all references.",
        "BLEU with '.': the same after a final '.' token is added to every caption and each reference ending in one, "
        "as a tokenisation keeping punctuation scores a model that learnt to end captions with it (Flickr8k: 90% "
        "of captions end in ' .'); on the paper's BLEU-1 this is worth about 2-3 points.",
    ]
    if grounded:
        notes.append(
            "Demo grounding: images whose caption names only shapes present; shape words (of objects "
            "unique in their image) whose attention peak lies inside the object's box."
        )
    return "\n".join(lines + notes) + "\n"
