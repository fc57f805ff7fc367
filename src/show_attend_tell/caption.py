"""Captions for the user's own image files from a trained model, optionally with attention figures.

The images go through exactly what the model's training images went through: the encoder, layer and
crop size recorded in the model file, the preprocessing of feature extraction, then beam search. A
file that cannot be read gets its own error entry, so one bad photo does not stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import encoders
from .decode import beam_search
from .devices import resolve_device
from .encoding import encode_batch, prepare_encoder
from .errors import SatError
from .features import RANDOM_WEIGHTS
from .figures import attention_figure, is_figure
from .images import load_image
from .model import Captioner, load_model

log = logging.getLogger(__name__)

# The files a folder contributes, by suffix, matched case-insensitively.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MISSING = "no such file or folder"


@dataclass(frozen=True)
class Captioned:
    """One input file: its caption, or why it has none, and its attention figure when one was drawn."""

    path: Path
    caption: str | None = None
    error: str | None = None
    figure: Path | None = None


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Each input file as given (whatever its suffix: reading it says if it is no image), each folder's image
    files sorted; a missing path is kept, so that it is reported where the user listed it."""
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            paths.append(item)
    return paths


def caption_images(
    model_pt: str | Path,
    inputs: Sequence[str | Path],
    *,
    beam_size: int = 3,
    max_length: int = 30,
    length_penalty: float = 0.0,
    no_repeat_ngram: int = 0,
    figures_dir: str | Path | None = None,
    batch_size: int = 16,
    device: str = "auto",
) -> list[Captioned]:
    """Caption every image among ``inputs`` (files, or folders of image files): one entry per file, in order.

    Missing paths and unreadable files get an entry with an ``error``; a SatError means nothing can be
    captioned at all (no image files, or an unusable model file). With ``figures_dir``, each caption's
    attention is drawn to ``<figures_dir>/<image stem>.png`` (``<stem>_2.png``, ... where stems repeat).
    The encoder is rebuilt as the model's features were made: the same layer, input size and weights.
    """
    if min(beam_size, max_length, batch_size) < 1:
        raise SatError(
            f"beam size, max length and batch size must be at least 1, not {beam_size}, {max_length} and {batch_size}"
        )
    paths = expand_inputs(inputs)
    results = {i: Captioned(p, error=MISSING) for i, p in enumerate(paths) if not p.exists()}
    todo = [i for i in range(len(paths)) if i not in results]
    if not todo:
        raise _nothing_to_caption(inputs)
    if figures_dir is not None:
        _check_figures_dir(Path(figures_dir), inputs)
        planned: set[str] = set()  # the names if every image reads; checked again as each is written
        for i in todo:
            _check_figure_path(Path(figures_dir) / f"{_unique_stem(paths[i].stem, planned)}.png")
    dev = resolve_device(device)
    model, document = load_model(model_pt, dev)
    trained, vocab = document["features"], document["vocab"]
    name, size = trained["encoder"], int(trained["image_size"])
    grid = _checked_grid(model, trained, model_pt)
    encoder = prepare_encoder(name, trained["layer"], trained["weights"] != RANDOM_WEIGHTS, dev)
    stems: set[str] = set()
    with torch.inference_mode():
        for start in range(0, len(todo), batch_size):
            images = {}
            for i in todo[start : start + batch_size]:
                try:
                    images[i] = load_image(paths[i], size)
                except SatError as e:
                    results[i] = Captioned(paths[i], error=str(e))
            if not images:
                continue
            features = encode_batch(encoder, torch.stack(list(images.values())), name, dev).float()
            decoded = beam_search(
                model,
                features,
                vocab,
                beam_size=beam_size,
                max_length=max_length,
                length_penalty=length_penalty,
                no_repeat_ngram=no_repeat_ngram,
            )
            for (i, image), tokens, alphas in zip(images.items(), decoded.tokens, decoded.alphas, strict=True):
                words = [vocab[t] for t in tokens]
                caption, figure = " ".join(words), None
                if figures_dir is not None:
                    figure = Path(figures_dir) / f"{_unique_stem(paths[i].stem, stems)}.png"
                    _check_figure_path(figure)
                    attention_figure(
                        image.permute(1, 2, 0).numpy(),
                        words,
                        alphas,
                        grid,
                        figure,
                        title=f"{caption}  ({paths[i].name})",
                    )
                results[i] = Captioned(paths[i], caption=caption, figure=figure)
    failed = sum(r.error is not None for r in results.values())
    log.info(
        "captioned %d of %d images%s",
        len(paths) - failed,
        len(paths),
        f"; {failed} missing or unreadable" if failed else "",
    )
    return [results[i] for i in range(len(paths))]


def format_results(results: Sequence[Captioned]) -> str:
    """One line per image, ``<path>\\t<caption>`` or ``<path>\\terror: <message>``: easy to read and to cut."""
    return "\n".join(f"{r.path}\t{r.caption if r.error is None else 'error: ' + r.error}" for r in results)


def _nothing_to_caption(inputs: Sequence[str | Path]) -> SatError:
    """Why each input gave nothing: it is missing, or a folder with no image files."""
    reasons = [
        f"{p}: " + (f"no image files ({' '.join(IMAGE_SUFFIXES)})" if Path(p).is_dir() else MISSING) for p in inputs
    ]
    return SatError("nothing to caption" + (":\n  " + "\n  ".join(reasons) if reasons else ": no inputs given"))


def _check_figures_dir(figures_dir: Path, inputs: Sequence[str | Path]) -> None:
    """Refuse a figures folder that is an input or inside one: figures would land among (and over) the photos."""
    where = figures_dir.resolve()
    for item in map(Path, inputs):
        if where.is_relative_to(item.resolve()):
            raise SatError(
                f"the figures folder {figures_dir} is the input {item} or inside it: "
                f"choose a folder apart from the images"
            )


def _check_figure_path(figure: Path) -> None:
    """Refuse to overwrite anything at ``figure`` but an attention figure: it may be the user's own file."""
    if (figure.exists() or figure.is_symlink()) and not is_figure(figure):
        raise SatError(f"{figure} exists and is not an attention figure: refusing to overwrite it")


def _checked_grid(model: Captioner, trained: dict, model_pt: str | Path) -> tuple[int, int]:
    """The model's grid, after checking that the encoder recorded in its file makes annotation vectors of that
    shape: otherwise the file was edited or mixed up, and its captions would be meaningless."""
    name, layer, size = trained["encoder"], trained["layer"], int(trained["image_size"])
    h, w, d = encoders.output_grid(name, layer, size)
    grid = tuple(int(g) for g in trained["grid"])
    locations, dim = model.config.num_locations, model.config.feature_dim
    if (h, w) != grid or (h * w, d) != (locations, dim):
        raise SatError(
            f"the model file {model_pt} and its encoder disagree: {name} {layer} on {size} px images makes a "
            f"{h}x{w} grid of {d}-dimensional vectors, but the model was trained on a "
            f"{'x'.join(map(str, grid))} grid ({locations} locations of {dim})"
        )
    return h, w


def _unique_stem(stem: str, taken: set[str]) -> str:
    """``stem``, or ``stem_2``, ``stem_3``, ... if taken; compared case-insensitively, as some file systems do."""
    name, n = stem, 1
    while name.lower() in taken:
        n += 1
        name = f"{stem}_{n}"
    taken.add(name.lower())
    return name
