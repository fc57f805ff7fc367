"""Two models' captions compared with a paired bootstrap over the images (`sat compare`)."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from test_metrics import HYPOTHESES, REFERENCES, write_inputs

from show_attend_tell.atomic import partial_path
from show_attend_tell.errors import SatError
from show_attend_tell.metrics import score
from show_attend_tell.paired import COLUMNS, compare, image_scores, paired_bootstrap

ANIMALS = ["dog", "cat", "horse", "bird", "cow", "goat", "sheep", "duck"]
PLACES = ["grass", "beach", "snow", "road", "field"]
# 40 images, three references each; the good model says the first, the vague one the same few words everywhere.
SCENES = {k: (ANIMALS[k % 8], PLACES[k % 5]) for k in range(40)}
MANY_REFERENCES = {
    k: [f"A {a} runs on the {p}.", f"The {a} is on the {p}.", f"A brown {a} walks across the {p}."]
    for k, (a, p) in SCENES.items()
}
GOOD = {k: f"A {a} runs on the {p}." for k, (a, p) in SCENES.items()}
VAGUE = {k: "An animal is outside." for k in SCENES}
ONE_WORSE = GOOD | {0: "A cat sits."}


@pytest.fixture(scope="module")
def scores():
    captions = {"good": GOOD, "vague": VAGUE, "one worse": ONE_WORSE}
    return {name: image_scores(MANY_REFERENCES, c) for name, c in captions.items()}


def test_the_images_scores_add_up_to_the_corpus_scores_of_the_evaluate_stage():
    per_image = image_scores(REFERENCES, HYPOTHESES)
    corpus = per_image.corpus(np.ones((1, len(REFERENCES))))
    expected = score(REFERENCES, HYPOTHESES)
    assert corpus["cider"][0] == pytest.approx(expected["cider"], rel=1e-9)
    assert corpus["bleu4"][0] == pytest.approx(expected["paper_bleu_4"], rel=1e-6)
    assert 0 < corpus["meteor_image_mean"][0] < 1


def test_a_model_against_itself_differs_by_nothing_in_any_redraw(scores):
    table = paired_bootstrap(scores["good"], scores["good"], draws=200)
    assert list(table.columns) == list(COLUMNS)
    assert list(table["metric"]) == ["bleu4", "meteor_image_mean", "cider"]
    assert (table[["b_minus_a", "low", "high"]] == 0).all().all()


def test_a_clearly_worse_model_is_below_on_every_metric_with_the_whole_interval(scores):
    table = paired_bootstrap(scores["good"], scores["vague"], draws=1000).set_index("metric")
    assert (table["b_minus_a"] < 0).all() and (table["high"] < 0).all()
    assert (table["low"] <= table["b_minus_a"]).all() and (table["b_minus_a"] <= table["high"]).all()
    assert table.loc["cider", "b_minus_a"] == pytest.approx(table.loc["cider", "b"] - table.loc["cider", "a"])


def test_one_worse_caption_in_forty_is_within_what_redrawing_the_images_gives(scores):
    table = paired_bootstrap(scores["good"], scores["one worse"], draws=1000).set_index("metric")
    assert (table["b_minus_a"] < 0).all()
    assert (table["low"] < table["b_minus_a"]).all() and (table["high"] >= 0).all()


def test_the_same_seed_draws_the_same_interval(scores):
    first, again = (paired_bootstrap(scores["good"], scores["one worse"], draws=600, seed=5) for _ in range(2))
    other = paired_bootstrap(scores["good"], scores["one worse"], draws=600, seed=6)
    pd.testing.assert_frame_equal(first, again)
    assert not first[["low", "high"]].equals(other[["low", "high"]])


def test_sat_compare_prints_the_table_and_writes_it(tmp_path):
    _, captions_csv, _ = write_inputs(tmp_path, [])
    results = []
    for name, captions in [("a", HYPOTHESES), ("b", HYPOTHESES | {3: "A man."})]:
        path = tmp_path / f"{name}.json"
        pd.DataFrame([{"image_id": i, "caption": c} for i, c in captions.items()]).to_json(path, orient="records")
        results.append(path)
    out = tmp_path / "compare.csv"
    run = subprocess.run(
        [sys.executable, "-m", "show_attend_tell", "compare", captions_csv, *results, "--out", out, "--draws", "100"],
        capture_output=True,
        text=True,
        check=True,
    )
    written = pd.read_csv(out)
    assert list(written["metric"]) == ["bleu4", "meteor_image_mean", "cider"]
    assert written.loc[2, "a"] == pytest.approx(score(REFERENCES, HYPOTHESES)["cider"], rel=1e-4)
    assert all(line.split()[0] in {"metric", *written["metric"]} for line in run.stdout.strip().splitlines())


def test_captions_of_other_images_are_refused_and_nothing_is_written(tmp_path):
    _, captions_csv, _ = write_inputs(tmp_path, [])
    paths = []
    for name, captions in [("a", HYPOTHESES), ("b", {1: "A dog.", 2: "Kids."})]:
        path = tmp_path / f"{name}.json"
        pd.DataFrame([{"image_id": i, "caption": c} for i, c in captions.items()]).to_json(path, orient="records")
        paths.append(path)
    out = tmp_path / "compare.csv"
    with pytest.raises(SatError, match=r"must caption exactly the 3 test images .*1 have no caption \[3\]"):
        compare(captions_csv, *paths, "test", out)
    assert not out.exists() and not partial_path(out).exists()
