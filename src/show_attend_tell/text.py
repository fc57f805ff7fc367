"""Tokenisation, the vocabulary, encoded captions and the paper's length dictionary.

The vocabulary comes from the train split only, so validation and test words the model never saw
become ``<unk>`` exactly as they would for a new image.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from nltk.tokenize import TreebankWordTokenizer

from .atomic import atomic_output
from .errors import SatError

log = logging.getLogger(__name__)

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
TOKENIZERS = ("words", "treebank")

_WORD = re.compile(r"[a-z0-9]+")
_TREEBANK = TreebankWordTokenizer()


def tokenize(text: str, tokenizer: str = "words") -> list[str]:
    """Lower-cased tokens of ``text``.

    ``words`` keeps runs of letters and digits, as in Karpathy's JSON tokens; ``treebank`` is nltk's
    Penn Treebank tokenizer (rule-based: needs no nltk data download) and keeps punctuation.
    """
    text = text.lower()
    if tokenizer == "words":
        return _WORD.findall(text)
    if tokenizer == "treebank":
        return _TREEBANK.tokenize(text)
    raise SatError(f"unknown tokenizer {tokenizer!r}; choose one of {TOKENIZERS}")


def read_captions(path: str | Path) -> pd.DataFrame:
    """captions.csv with tokens as strings (an empty token column must not turn into NaN)."""
    return pd.read_csv(path, keep_default_na=False, dtype={"tokens": str, "raw": str, "split": str})


def build_vocab(captions_csv: str | Path, vocab_csv: str | Path, size: int) -> pd.DataFrame:
    """The ``size`` most frequent train words (ties: alphabetical) after the specials.

    ``count`` is the number of train occurrences; for the specials it is what encoding the train
    captions produces (one ``<start>``/``<end>`` per caption, ``<unk>`` per dropped word).
    """
    captions = read_captions(captions_csv)
    train = captions[captions["split"] == "train"]
    if train.empty:
        raise SatError(f"{captions_csv} has no train captions to build a vocabulary from")
    counts = Counter(word for tokens in train["tokens"] for word in tokens.split())
    clash = [w for w in SPECIALS if w in counts]
    if clash:
        raise SatError(f"train captions contain the reserved tokens {clash}")
    ranked = sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))
    kept, dropped = ranked[:size], ranked[size:]
    special_counts = {PAD: 0, START: len(train), END: len(train), UNK: sum(c for _, c in dropped)}
    rows = [(w, special_counts[w]) for w in SPECIALS] + kept
    vocab = pd.DataFrame({"index": range(len(rows)), "word": [w for w, _ in rows], "count": [c for _, c in rows]})
    with atomic_output(vocab_csv) as tmp:
        vocab.to_csv(tmp, index=False)
    log.info(
        "vocabulary: %d words kept of %d distinct train words (+%d specials); %d train tokens become %s",
        len(kept),
        len(counts),
        len(SPECIALS),
        special_counts[UNK],
        UNK,
    )
    return vocab


def read_vocab(path: str | Path) -> pd.DataFrame:
    """vocab.csv, checked to start with the specials and to be indexed 0..n-1."""
    vocab = pd.read_csv(path, keep_default_na=False, dtype={"word": str})
    if tuple(vocab["word"][: len(SPECIALS)]) != SPECIALS or list(vocab["index"]) != list(range(len(vocab))):
        raise SatError(f"{path} is not a vocabulary written by this workflow (specials {SPECIALS} first, index 0..n-1)")
    return vocab


def encode(
    captions_csv: str | Path, vocab_csv: str | Path, captions_h5: str | Path, max_length: int | None = None
) -> None:
    """Token ids ``<start> w1 .. wn <end> <pad>..`` per caption, with lengths and image indices, to HDF5."""
    captions, vocab = read_captions(captions_csv), read_vocab(vocab_csv)
    index = dict(zip(vocab["word"], vocab["index"]))
    unk = index[UNK]
    words = [t.split() for t in captions["tokens"]]
    if max_length is not None:
        n_truncated = sum(len(w) > max_length for w in words)
        words = [w[:max_length] for w in words]
    else:
        n_truncated = 0
    lengths = np.array([len(w) for w in words], dtype=np.int32)
    if (lengths == 0).any():
        raise SatError(f"{captions_csv} has empty captions at rows {np.flatnonzero(lengths == 0)[:10].tolist()}")
    tokens = np.full((len(words), int(lengths.max()) + 2), index[PAD], dtype=np.int32)
    for row, ws in enumerate(words):
        ids = [index[START], *(index.get(w, unk) for w in ws), index[END]]
        tokens[row, : len(ids)] = ids
    with atomic_output(captions_h5) as tmp, h5py.File(tmp, "w", track_order=True) as f:
        f.create_dataset("tokens", data=tokens, track_times=False)
        f.create_dataset("lengths", data=lengths, track_times=False)
        f.create_dataset("image_index", data=captions["image_index"].to_numpy(np.int64), track_times=False)
        f.create_dataset("image_ids", data=captions["image_id"].to_numpy(np.int64), track_times=False)
        f.create_dataset("sentence_ids", data=captions["sentence_id"].to_numpy(np.int64), track_times=False)
        f.create_dataset(
            "splits", data=captions["split"].to_numpy(dtype=object), dtype=h5py.string_dtype(), track_times=False
        )
        f.attrs["description"] = (
            "tokens[i] = <start> w1..wn <end> then <pad>; lengths[i] = n (words, without <start>/<end>); "
            "row i is row i of captions.csv; image_index points into images.csv and the features file"
        )
        f.attrs["vocab_size"] = len(vocab)
        for name in SPECIALS:
            f.attrs[f"{name.strip('<>')}_id"] = index[name]
        f.attrs["max_length"] = -1 if max_length is None else max_length
        f.attrs["n_truncated"] = n_truncated
        f.attrs["n_unk"] = int((tokens == unk).sum())
    log.info("encoded %d captions (max %d words, %d truncated)", len(words), lengths.max(), n_truncated)


def length_dictionary(captions_h5: str | Path, lengths_json: str | Path, split: str = "train") -> dict[int, list[int]]:
    """Caption length -> indices of the ``split`` captions of that length.

    The paper draws each minibatch from one length so that no step computes on padding.
    """
    with h5py.File(captions_h5, "r") as f:
        lengths = f["lengths"][:]
        splits = f["splits"].asstr()[:]
    rows = np.flatnonzero(splits == split)
    if rows.size == 0:
        raise SatError(f"{captions_h5} has no {split} captions")
    by_length: dict[int, list[int]] = {}
    for row in rows:
        by_length.setdefault(int(lengths[row]), []).append(int(row))
    ordered = dict(sorted(by_length.items()))
    document = {
        "description": f"{split} caption length in words (without <start>/<end>) -> caption indices "
        "(rows of captions.h5 and captions.csv)",
        "split": split,
        "counts": {str(k): len(v) for k, v in ordered.items()},
        "lengths": {str(k): v for k, v in ordered.items()},
    }
    with atomic_output(lengths_json) as tmp:
        tmp.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return ordered
