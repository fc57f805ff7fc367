"""What training and decoding read: encoded captions, annotation vectors, and the paper's length batches."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from .errors import SatError
from .text import read_captions, read_vocab

log = logging.getLogger(__name__)

# What a features file must share with the one a model was trained on.
FEATURE_KEYS = ("encoder", "layer", "grid", "dim", "image_size", "weights", "images_sha256")


@dataclass(frozen=True)
class Captions:
    """captions.h5 in memory: row i is row i of captions.csv."""

    tokens: np.ndarray  # (N, T) int64: <start> w.. <end> <pad>..
    lengths: np.ndarray  # (N,) words, without <start>/<end>
    image_index: np.ndarray  # (N,) rows of images.csv and of the features file
    splits: np.ndarray  # (N,) str
    vocab: list[str]


def read_encoded(captions_h5: str | Path, vocab_csv: str | Path) -> Captions:
    """captions.h5 with its vocabulary, checked to belong together."""
    vocab = read_vocab(vocab_csv)["word"].tolist()
    with h5py.File(captions_h5, "r") as f:
        tokens = f["tokens"][:].astype(np.int64)
        captions = Captions(
            tokens,
            f["lengths"][:].astype(np.int64),
            f["image_index"][:].astype(np.int64),
            f["splits"].asstr()[:],
            vocab,
        )
        declared = int(f.attrs["vocab_size"])
    if declared != len(vocab) or tokens.max() >= len(vocab):
        raise SatError(
            f"{captions_h5} was encoded with a vocabulary of {declared} words (largest id {tokens.max()}), "
            f"but {vocab_csv} has {len(vocab)}: rerun the encode stage"
        )
    return captions


def references(captions_csv: str | Path, split: str) -> dict[int, list[str]]:
    """image_index -> the tokenised reference captions of each ``split`` image (words, not ids: no <unk>)."""
    table = read_captions(captions_csv)
    table = table[table["split"] == split]
    return {int(i): group["tokens"].tolist() for i, group in table.groupby("image_index", sort=True)}


class Features:
    """Annotation vectors by image index: held in memory when they fit ``max_memory_gb``, else read per batch."""

    def __init__(self, path: str | Path, max_memory_gb: float = 8.0) -> None:
        self.path = Path(path)
        self.file = h5py.File(self.path, "r")
        data = self.file["features"]
        self.attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.file.attrs.items()}
        if int(self.attrs.get("n_done", data.shape[0])) != data.shape[0]:
            raise SatError(f"{path} is incomplete ({self.attrs.get('n_done')} of {data.shape[0]} images)")
        self.n_images, self.num_locations, self.feature_dim = data.shape
        self.splits = self.file["splits"].asstr()[:]
        if data.nbytes <= max_memory_gb * 2**30:
            self.memory: torch.Tensor | None = torch.from_numpy(data[:])
        else:
            log.info("%s holds %.1f GB: reading it per batch", path, data.nbytes / 2**30)
            self.memory = None

    def __getitem__(self, index: np.ndarray) -> torch.Tensor:
        """float16 (B, L, D) for the images ``index`` (repeats allowed)."""
        if self.memory is not None:
            return self.memory[torch.from_numpy(np.array(index, dtype=np.int64))]
        unique, inverse = np.unique(index, return_inverse=True)  # h5py reads increasing indices only
        return torch.from_numpy(self.file["features"][unique])[torch.from_numpy(inverse)]

    def check_images(self, captions: Captions) -> None:
        """The captions' image indices must point into this file, at images of the same split."""
        if captions.image_index.max() >= self.n_images:
            raise SatError(
                f"captions refer to image {captions.image_index.max()}, but {self.path} holds "
                f"{self.n_images} images: rerun the features stage"
            )
        if (self.splits[captions.image_index] != captions.splits).any():
            raise SatError(
                f"{self.path} and the captions disagree on image splits: they come from different "
                "runs of the prepare stage; rerun the features stage"
            )

    def close(self) -> None:
        self.file.close()


def read_length_dictionary(path: str | Path) -> dict[int, np.ndarray]:
    """lengths.json: caption length -> train caption rows."""
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    return {int(k): np.asarray(v, dtype=np.int64) for k, v in document["lengths"].items()}


def length_batches(by_length: dict[int, np.ndarray], batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """One epoch of minibatches, each of captions of one length (the paper's scheme: no step is padding).

    Every caption appears once; batches come in a random order, so lengths are drawn in proportion to
    their frequency. The order depends on (seed, epoch) alone, so a resumed epoch replays it exactly.
    """
    rng = np.random.default_rng([seed, epoch])
    batches = []
    for length in sorted(by_length):
        rows = rng.permutation(by_length[length])
        batches += [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def teacher_batch(captions: Captions, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, targets, mask) for ``rows``: inputs <start> w.., targets w.. <end>, cut to the longest caption."""
    steps = int(captions.lengths[rows].max()) + 1
    tokens = torch.from_numpy(captions.tokens[rows, : steps + 1])
    mask = torch.arange(steps).unsqueeze(0) <= torch.from_numpy(captions.lengths[rows]).unsqueeze(1)
    return tokens[:, :-1], tokens[:, 1:], mask.float()


def check_features(document: dict, features: Features) -> None:
    """A model can only read features of the grid, layer and encoder it was trained on."""
    trained = document["features"]
    here = {k: features.attrs.get(k) for k in ("encoder", "layer", "grid", "dim", "image_size")}
    changed = [
        f"{k}: {trained.get(k)!r} when trained, {v!r} in {features.path}"
        for k, v in here.items()
        if trained.get(k) != v
    ]
    if changed:
        raise SatError("the features do not match the model's:\n  " + "\n  ".join(changed))
