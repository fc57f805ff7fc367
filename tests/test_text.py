"""Tokenisation, vocabulary, encoded captions and the length dictionary."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from show_attend_tell.cli import main
from show_attend_tell.errors import SatError
from show_attend_tell.text import SPECIALS, build_vocab, encode, length_dictionary, read_vocab, tokenize


def write_captions(path, rows):
    """captions.csv with the columns prepare writes; rows are (split, image_index, tokens)."""
    frame = pd.DataFrame(
        [
            {
                "caption_index": i,
                "image_index": im,
                "image_id": 100 + im,
                "split": split,
                "sentence_id": i,
                "file": f"{im}.jpg",
                "raw": tokens,
                "tokens": tokens,
            }
            for i, (split, im, tokens) in enumerate(rows)
        ]
    )
    frame.to_csv(path, index=False)
    return path


def test_words_tokenizer_lowercases_and_drops_punctuation():
    assert tokenize("A Dog's ball, 2 kids.") == ["a", "dog", "s", "ball", "2", "kids"]


def test_treebank_tokenizer_keeps_punctuation_without_nltk_data():
    assert tokenize("A dog runs.", "treebank") == ["a", "dog", "runs", "."]


def test_unknown_tokenizer_is_a_clear_error():
    with pytest.raises(SatError, match="unknown tokenizer"):
        tokenize("a", "bpe")


def test_vocab_keeps_most_frequent_train_words_after_specials(tmp_path):
    captions = write_captions(
        tmp_path / "captions.csv",
        [
            ("train", 0, "a dog runs"),
            ("train", 0, "a dog sits"),
            ("train", 1, "a cat"),
            ("val", 2, "zebra zebra zebra zebra"),
        ],
    )
    vocab = build_vocab(captions, tmp_path / "vocab.csv", size=2)
    assert list(vocab["word"]) == [*SPECIALS, "a", "dog"]
    assert list(vocab["index"]) == list(range(6))
    counts = dict(zip(vocab["word"], vocab["count"]))
    assert counts == {"<pad>": 0, "<start>": 3, "<end>": 3, "<unk>": 3, "a": 3, "dog": 2}
    assert read_vocab(tmp_path / "vocab.csv").equals(vocab)


def test_the_sat_vocab_command_keeps_the_size_asked(tmp_path):
    captions = write_captions(tmp_path / "captions.csv", [("train", 0, "a dog runs"), ("train", 1, "a dog")])
    assert main(["vocab", str(captions), str(tmp_path / "vocab.csv"), "--size", "1"]) == 0
    assert list(read_vocab(tmp_path / "vocab.csv")["word"]) == [*SPECIALS, "a"]


def test_vocab_ties_are_broken_alphabetically_for_reproducibility(tmp_path):
    captions = write_captions(tmp_path / "captions.csv", [("train", 0, "b c a")])
    vocab = build_vocab(captions, tmp_path / "vocab.csv", size=3)
    assert list(vocab["word"][4:]) == ["a", "b", "c"]


def test_encode_writes_start_words_end_then_padding(tmp_path):
    captions = write_captions(
        tmp_path / "captions.csv",
        [
            ("train", 0, "a dog runs"),
            ("train", 1, "a cat"),
            ("test", 1, "a zebra"),
        ],
    )
    build_vocab(captions, tmp_path / "vocab.csv", size=10)
    encode(captions, tmp_path / "vocab.csv", tmp_path / "captions.h5")
    vocab = read_vocab(tmp_path / "vocab.csv")
    ids = dict(zip(vocab["word"], vocab["index"]))
    with h5py.File(tmp_path / "captions.h5") as f:
        tokens = f["tokens"][:]
        assert f["lengths"][:].tolist() == [3, 2, 2]
        assert f["image_index"][:].tolist() == [0, 1, 1]
        assert f["splits"].asstr()[:].tolist() == ["train", "train", "test"]
        assert f.attrs["pad_id"] == 0 and f.attrs["vocab_size"] == len(vocab)
    assert tokens.shape == (3, 5)
    assert tokens[0].tolist() == [ids["<start>"], ids["a"], ids["dog"], ids["runs"], ids["<end>"]]
    assert tokens[1].tolist() == [ids["<start>"], ids["a"], ids["cat"], ids["<end>"], ids["<pad>"]]
    assert tokens[2, 2] == ids["<unk>"]  # "zebra" is a test-only word


def test_encode_truncates_to_max_length(tmp_path):
    captions = write_captions(tmp_path / "captions.csv", [("train", 0, "a b c d e")])
    build_vocab(captions, tmp_path / "vocab.csv", size=10)
    encode(captions, tmp_path / "vocab.csv", tmp_path / "captions.h5", max_length=3)
    with h5py.File(tmp_path / "captions.h5") as f:
        assert f["lengths"][:].tolist() == [3]
        assert f["tokens"].shape == (1, 5)
        assert f.attrs["n_truncated"] == 1


def test_encode_refuses_a_vocabulary_from_elsewhere(tmp_path):
    captions = write_captions(tmp_path / "captions.csv", [("train", 0, "a b")])
    pd.DataFrame({"index": [0, 1], "word": ["a", "b"], "count": [1, 1]}).to_csv(tmp_path / "vocab.csv", index=False)
    with pytest.raises(SatError, match="not a vocabulary"):
        encode(captions, tmp_path / "vocab.csv", tmp_path / "captions.h5")
    assert not (tmp_path / "captions.h5").exists()


def test_length_dictionary_groups_train_captions_by_length(tmp_path):
    captions = write_captions(
        tmp_path / "captions.csv",
        [
            ("train", 0, "a b"),
            ("val", 0, "a b"),
            ("train", 1, "a b c"),
            ("train", 1, "c d"),
        ],
    )
    build_vocab(captions, tmp_path / "vocab.csv", size=10)
    encode(captions, tmp_path / "vocab.csv", tmp_path / "captions.h5")
    assert length_dictionary(tmp_path / "captions.h5", tmp_path / "lengths.json") == {2: [0, 3], 3: [2]}
    document = json.loads((tmp_path / "lengths.json").read_text())
    assert document["lengths"] == {"2": [0, 3], "3": [2]}
    assert document["counts"] == {"2": 2, "3": 1}
    assert document["split"] == "train"


def test_encoded_outputs_are_byte_identical_across_runs(tmp_path):
    captions = write_captions(tmp_path / "captions.csv", [("train", 0, "a b"), ("train", 1, "b c d")])
    build_vocab(captions, tmp_path / "vocab.csv", size=10)
    encode(captions, tmp_path / "vocab.csv", tmp_path / "one.h5")
    encode(captions, tmp_path / "vocab.csv", tmp_path / "two.h5")
    assert (tmp_path / "one.h5").read_bytes() == (tmp_path / "two.h5").read_bytes()
    assert np.array_equal(h5py.File(tmp_path / "one.h5")["tokens"][:], h5py.File(tmp_path / "two.h5")["tokens"][:])
