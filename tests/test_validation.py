"""Validation: what is measured after every epoch and how the score that selects the model is read."""

from __future__ import annotations

import numpy as np
import pytest

from show_attend_tell import data, validation
from show_attend_tell.errors import SatError
from show_attend_tell.metrics import token_scores


def test_the_validation_set_holds_every_val_caption_once_in_batches_of_one_length(stages):
    captions = data.read_encoded(stages / "captions.h5", stages / "vocab.csv")
    vset = validation.validation_set(captions, stages / "captions.csv", None)
    rows = np.concatenate(vset.batches)
    assert sorted(rows.tolist()) == np.flatnonzero(captions.splits == "val").tolist()
    assert all(len(set(captions.lengths[b])) == 1 for b in vset.batches)
    assert sorted(vset.references) == vset.images.tolist()
    assert all(set(captions.splits[captions.image_index == i]) == {"val"} for i in vset.images)


def test_val_images_limits_the_images_and_their_captions(stages):
    captions = data.read_encoded(stages / "captions.h5", stages / "vocab.csv")
    vset = validation.validation_set(captions, stages / "captions.csv", 2)
    assert len(vset.images) == 2 and set(captions.image_index[np.concatenate(vset.batches)]) == set(vset.images)


def test_a_table_without_validation_captions_is_refused(stages, tmp_path):
    import pandas as pd

    table = pd.read_csv(stages / "captions.csv", keep_default_na=False)
    table[table["split"] != "val"].to_csv(tmp_path / "captions.csv", index=False)
    captions = data.read_encoded(stages / "captions.h5", stages / "vocab.csv")
    with pytest.raises(SatError, match="no validation captions"):
        validation.validation_set(captions, tmp_path / "captions.csv", None)


@pytest.mark.parametrize(("select_on", "expected"), [("cider", 0.5), ("bleu4", 0.2), ("nll", -3.1)])
def test_the_selection_score_grows_with_quality(select_on, expected):
    measured = {"cider": 0.5, "bleu4": 0.2, "nll_per_word": 3.1}
    assert validation.selection_score(measured, select_on) == expected


def test_token_scores_are_perfect_for_a_reference_and_lower_for_a_stranger():
    refs = {1: ["a dog runs on the grass", "a brown dog runs"], 2: ["two people ride bikes down a road"]}
    same = token_scores(refs, {1: "a dog runs on the grass", 2: "two people ride bikes down a road"})
    other = token_scores(refs, {1: "a cat sleeps", 2: "a man sings"})
    assert same["bleu4"] == pytest.approx(1.0, abs=1e-6) and same["cider"] > other["cider"]
    assert other["bleu4"] < 0.01
