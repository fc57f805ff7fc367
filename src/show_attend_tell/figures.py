"""Attention figures like the paper's Fig. 2 and 3: the image, then one panel per word with its attention.

Each word's alpha over the H x W grid is upsampled to the crop the encoder saw (x16 for 14 x 14 on
224 px, as in the paper) and smoothed with a Gaussian filter, then laid over the image: bright where
the model looked.
"""

from __future__ import annotations

import logging
import math
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy import ndimage

from .atomic import atomic_output
from .errors import SatError
from .images import load_image, read_images_csv

log = logging.getLogger(__name__)

COLUMNS = 5
# A text chunk in every attention figure: what lets a later run overwrite a figure, and nothing else.
FIGURE_MARK = {"Source": "show_attend_tell attention figure"}


def upsample(alpha: np.ndarray, grid: tuple[int, int], size: int) -> np.ndarray:
    """A (size, size) map of one step's attention: the grid scaled up, then Gaussian-smoothed, max 1."""
    h, w = grid
    scale = size / h
    up = np.kron(alpha.reshape(h, w), np.ones((math.ceil(scale), math.ceil(size / w))))[:size, :size]
    smooth = ndimage.gaussian_filter(up, sigma=scale / 2)
    return smooth / max(smooth.max(), 1e-12)


def attention_figure(
    image: np.ndarray, words: list[str], alphas: np.ndarray, grid: tuple[int, int], path: str | Path, title: str = ""
) -> None:
    """``image`` (S, S, 3) uint8, ``alphas`` (n_words [+1 for <end>], L): one panel per word."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = words + ["<end>"] * (len(alphas) - len(words))
    panels = 1 + len(labels)
    rows = math.ceil(panels / COLUMNS)
    # Fixed margins and tick-free axes: tight_layout measured every panel's ticks, most of a figure's time.
    title = textwrap.fill(title or " ".join(words), 110)  # ~ what the figure's width holds at 10 pt
    top = 0.38 + 0.17 * (title.count("\n") + 1)  # inches above the first row: the title and the row's words
    height = 2.4 * rows + top - 0.55
    fig, axes = plt.subplots(
        rows,
        COLUMNS,
        figsize=(2.2 * COLUMNS, height),
        squeeze=False,
        subplot_kw={"xticks": [], "yticks": [], "frame_on": False},
        gridspec_kw={"left": 0.01, "right": 0.99, "bottom": 0.01, "top": 1 - top / height, "wspace": 0.05},
    )
    for ax in axes.flat[panels:]:
        ax.set_visible(False)
    axes.flat[0].imshow(image)
    axes.flat[0].set_title("input", fontsize=9)
    size = image.shape[0]
    for ax, word, alpha in zip(axes.flat[1:], labels, alphas):
        mask = upsample(alpha, grid, size)
        ax.imshow((image * (0.25 + 0.75 * mask[..., None])).astype(np.uint8))
        ax.set_title(word, fontsize=10)
    fig.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80, metadata={"Software": None, **FIGURE_MARK})
    plt.close(fig)


def is_figure(path: str | Path) -> bool:
    """Whether ``path`` is a plain file that ``attention_figure`` wrote (so may be overwritten)."""
    from PIL import Image

    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with Image.open(path) as image:  # reads the header and the chunks before the pixels, not the pixels
            return all(image.info.get(key) == value for key, value in FIGURE_MARK.items())
    except Exception:  # noqa: BLE001 - anything unreadable as a PNG is not ours
        return False


def split_figures(attention_h5: str | Path, images_csv: str | Path, out_dir: str | Path, count: int) -> list[Path]:
    """Figures of the first ``count`` images of a decoded split, named by image id, in one folder (atomically)."""
    paths = {int(r["image_index"]): r["path"] for r in read_images_csv(images_csv)}
    with h5py.File(attention_h5, "r") as f:
        grid, size = tuple(int(g) for g in f.attrs["grid"]), int(f.attrs["image_size"])
        n = min(count, len(f["image_ids"]))
        entries = [
            (
                int(f["image_ids"][i]),
                int(f["image_index"][i]),
                f["captions"].asstr()[i],
                f["alphas"][i, : int(f["n_words"][i]) + int(f["finished"][i])].astype(np.float32),
            )
            for i in range(n)
        ]
        what = f"{f.attrs.get('attention', '')} attention, beam {f.attrs['beam_size']}".strip()
    if not entries:
        raise SatError(f"{attention_h5} holds no captions to draw")
    written = []
    with atomic_output(out_dir, folder=True) as tmp:
        tmp.mkdir()
        for image_id, index, caption, alphas in entries:
            image = load_image(paths[index], size).permute(1, 2, 0).numpy()
            name = f"{image_id}.png"
            attention_figure(image, caption.split(), alphas, grid, tmp / name, title=f"{caption}  ({what})")
            written.append(Path(out_dir) / name)
    log.info("wrote %d attention figures to %s", len(written), out_dir)
    return written


SELECTION_LABELS = {
    "cider": ("val_cider", "validation CIDEr (decoded)"),
    "bleu4": ("val_bleu4", "validation BLEU-4 (decoded)"),
    "nll": ("val_nll_per_word", "validation NLL (nats/word)"),
}


def plot_curves(table: pd.DataFrame, path: str | Path, title: str, select_on: str) -> None:
    """Learning curves: NLL per word (training and validation), attention entropy and penalty, the selection score.

    The selected epoch is circled on the panel of the score that selected it; self-critical epochs, if any,
    are shaded (their training NLL, of the model's own samples, is left out of the first panel).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4), constrained_layout=True)
    column, label = SELECTION_LABELS[select_on]
    teacher = table[table["objective"] == "cross_entropy"]
    axes[0].plot(teacher["epoch"], teacher["nll_per_word"], marker="o", ms=3, label="training")
    axes[0].plot(table["epoch"], table["val_nll_per_word"], marker="o", ms=3, label="validation")
    axes[0].set_title("NLL (nats/word)", fontsize=10)
    axes[0].legend(fontsize=8)
    axes[1].plot(table["epoch"], table["entropy_per_word"], marker="o", ms=3)
    axes[1].set_title("attention entropy (nats/word)", fontsize=10)
    axes[2].plot(table["epoch"], table["attention_reg"], marker="o", ms=3)
    axes[2].set_title("sum_i (1 - sum_t alpha_ti)^2", fontsize=10)
    axes[3].plot(table["epoch"], table[column], marker="o", ms=3)
    axes[3].set_title(label, fontsize=10)
    critical = table[table["objective"] == "self_critical"]
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if not critical.empty:
            ax.axvspan(critical["epoch"].min() - 0.5, critical["epoch"].max() + 0.5, color="C2", alpha=0.12, lw=0)
    if not critical.empty:
        axes[0].plot([], [], color="C2", alpha=0.3, lw=6, label="self-critical")
        axes[0].legend(fontsize=8)
    best = table[table["best"].astype(bool)].tail(1)
    if not best.empty:
        axes[3].scatter(
            best["epoch"],
            best[column],
            s=80,
            facecolors="none",
            edgecolors="C3",
            label=f"selected: epoch {int(best['epoch'].iloc[0])}",
        )
        axes[3].legend(fontsize=8)
    fig.suptitle(title)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
