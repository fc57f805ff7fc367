"""Captioning the user's own files: the pipeline of training's features, bad files reported one by one, figures."""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from show_attend_tell import encoders
from show_attend_tell.caption import Captioned, caption_images, format_results
from show_attend_tell.data import FEATURE_KEYS, Features
from show_attend_tell.decode import beam_search
from show_attend_tell.errors import SatError
from show_attend_tell.features import extract
from show_attend_tell.model import Captioner, ModelConfig, load_model, save_model
from show_attend_tell.text import SPECIALS

ENCODER, LAYER, SIZE = "efficientnet_lite0", "blocks.4", 64
WORDS = ["a", "dog", "runs", "on", "grass", "red", "ball"]
VOCAB = list(SPECIALS) + WORDS
MAX_LENGTH = 8
PNG = b"\x89PNG\r\n\x1a\n"


def write_photo(path: Path, size: tuple[int, int], seed: int, mode: str = "RGB") -> Path:
    """A smooth random picture, so the encoder sees something photo-like."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = (rng.random((h // 8 + 1, w // 8 + 1, 3)) * 255).astype(np.uint8)
    Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC).convert(mode).save(path)
    return path


def write_model(path: Path, features: dict, seed: int = 0) -> Path:
    """A small untrained captioner, written as the train stage writes its model."""
    h, w = (int(g) for g in features["grid"])
    torch.manual_seed(seed)
    config = ModelConfig(
        len(VOCAB), h * w, int(features["dim"]), embed_dim=8, hidden_dim=12, attention_dim=6, dropout=0.0
    )
    model = Captioner(config)
    with torch.no_grad():
        model.out.weight.mul_(4.0)  # peaked word distributions: captions that end
    save_model(
        path,
        model,
        model.state_dict(),
        vocab=VOCAB,
        features=features,
        settings={"attention": "soft"},
        seed=seed,
        epoch=1,
        selected_on="cider",
        val_bleu4=0.0,
        val_cider=0.0,
    )
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[dict]:
    """Three photos in a folder, among a corrupt JPEG and a text file; a model trained (so to speak) on their
    features as extraction writes them, whose file records the features' attributes as training does."""
    root = tmp_path_factory.mktemp("caption")
    photos = root / "photos"
    photos.mkdir()
    good = [
        write_photo(photos / "b_beach.jpg", (90, 60), 1),
        write_photo(photos / "a_park.PNG", (64, 80), 2),
        write_photo(photos / "c_grey.jpeg", (120, 120), 3, mode="L"),
    ]
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (photos / "notes.txt").write_text("not an image\n")
    images_csv = root / "images.csv"
    with open(images_csv, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image_index", "image_id", "split", "file", "path"])
        writer.writerows([i, i, "test", p.name, str(p)] for i, p in enumerate(good))
    features_h5 = extract(
        images_csv,
        root / "features.h5",
        encoder=ENCODER,
        layer=LAYER,
        image_size=SIZE,
        batch_size=4,
        workers=0,
        device="cpu",
        pretrained=False,
        progress=False,
    )
    store = Features(features_h5)
    model_pt = write_model(root / "model.pt", {k: store.attrs.get(k) for k in FEATURE_KEYS})
    yield {"photos": photos, "good": good, "store": store, "model": model_pt}
    store.close()


def caption(model_pt, inputs, **kwargs) -> list[Captioned]:
    """On the CPU, with the random-weight encoder the test model's features came from (fast to build)."""
    return caption_images(model_pt, inputs, device="cpu", **{"max_length": MAX_LENGTH} | kwargs)


def test_folder_and_files_captioned_in_order_with_errors_for_bad_and_missing(setup, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    twin = write_photo(other / "b_beach.png", (70, 70), 4)  # same stem as a photo in the folder
    missing = tmp_path / "nowhere.jpg"
    figures = tmp_path / "figures"
    results = caption(setup["model"], [setup["photos"], missing, str(twin)], beam_size=2, figures_dir=figures)
    photos = setup["photos"]
    assert [r.path for r in results] == [
        photos / "a_park.PNG",
        photos / "b_beach.jpg",
        photos / "broken.jpg",
        photos / "c_grey.jpeg",
        missing,
        twin,
    ]
    captioned = [results[i] for i in (0, 1, 3, 5)]
    for r in captioned:
        assert r.error is None
        words = r.caption.split()
        assert len(words) <= MAX_LENGTH and set(words) <= set(WORDS)
        assert r.caption == " ".join(words)
    assert any(r.caption for r in captioned)
    broken, gone = results[2], results[4]
    assert broken.caption is None and broken.figure is None and "cannot read image" in broken.error
    assert gone.caption is None and gone.error == "no such file or folder"
    assert [r.figure for r in captioned] == [
        figures / "a_park.png",
        figures / "b_beach.png",
        figures / "c_grey.png",
        figures / "b_beach_2.png",
    ]
    for r in captioned:
        assert r.figure.read_bytes()[:8] == PNG
    assert sorted(p.name for p in figures.iterdir()) == ["a_park.png", "b_beach.png", "b_beach_2.png", "c_grey.png"]


def test_captions_are_those_of_the_extracted_features(setup):
    """Same preprocessing and encoder as feature extraction: beam search over features.h5 gives the same words."""
    results = caption(setup["model"], setup["good"], beam_size=3)
    model, _ = load_model(setup["model"])
    decoded = beam_search(model, setup["store"][np.arange(3)].float(), VOCAB, beam_size=3, max_length=MAX_LENGTH)
    assert [r.caption for r in results] == [" ".join(VOCAB[t] for t in ws) for ws in decoded.tokens]
    assert all(r.figure is None for r in results)


def test_batch_size_does_not_change_captions(setup):
    inputs = [setup["photos"], setup["good"][0]]
    one = caption(setup["model"], inputs, batch_size=1)
    many = caption(setup["model"], inputs, batch_size=16)
    assert one == many
    assert [r.error is None for r in one] == [True, True, False, True, True]


def test_an_explicitly_named_non_image_is_an_error_entry(setup):
    results = caption(setup["model"], [setup["photos"] / "notes.txt", setup["good"][0]])
    assert results[0].caption is None and "cannot read image" in results[0].error
    assert results[1].error is None and results[1].caption is not None


def test_a_named_pipe_is_an_error_entry_not_a_wait_for_a_writer(setup, tmp_path):
    os.mkfifo(tmp_path / "photo.jpg")  # opening it to read would block until something writes to it
    results = caption(setup["model"], [tmp_path / "photo.jpg", setup["good"][0]])
    assert results[0].caption is None and "not a regular file" in results[0].error
    assert results[1].error is None and results[1].caption is not None


def test_an_image_too_large_to_decode_safely_is_an_error_entry(setup, decompression_bomb):
    results = caption(setup["model"], [decompression_bomb, setup["good"][0]])
    assert results[0].caption is None and "decompression bomb" in results[0].error
    assert results[1].error is None and results[1].caption is not None


def test_garbage_or_missing_model_file(setup, tmp_path):
    garbage = tmp_path / "model.pt"
    garbage.write_bytes(b"this is not a model")
    with pytest.raises(SatError, match="cannot read the model file"):
        caption(garbage, setup["good"])
    torch.save({"weights": [1, 2, 3]}, tmp_path / "other.pt")
    with pytest.raises(SatError, match="not a model file"):
        caption(tmp_path / "other.pt", setup["good"])
    with pytest.raises(SatError, match="cannot read the model file"):
        caption(tmp_path / "absent.pt", setup["good"])


def test_model_whose_grid_does_not_fit_its_encoder(setup, tmp_path):
    h, w, d = encoders.output_grid(ENCODER, LAYER, SIZE)
    assert (h, w) != (7, 7)
    features = {
        "encoder": ENCODER,
        "layer": LAYER,
        "grid": [7, 7],
        "dim": d,
        "image_size": SIZE,
        "weights": "test",
        "images_sha256": "0" * 64,
    }
    with pytest.raises(SatError, match="disagree"):
        caption(write_model(tmp_path / "model.pt", features), setup["good"])


def test_nothing_to_caption(setup, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here\n")
    with pytest.raises(SatError, match=r"nothing to caption(.|\n)*empty: no image files(.|\n)*gone\.jpg: no such"):
        caption(setup["model"], [empty, tmp_path / "gone.jpg"])
    with pytest.raises(SatError, match="no inputs given"):
        caption(setup["model"], [])


def test_settings_below_one_are_refused_before_any_work(setup):
    with pytest.raises(SatError, match="at least 1"):
        caption(setup["model"], setup["good"], batch_size=0)


def test_format_results():
    results = [
        Captioned(Path("x/a.jpg"), caption="a dog runs"),
        Captioned(Path("x/b.jpg"), error="cannot read image x/b.jpg: truncated"),
        Captioned(Path("c.png"), caption=""),
    ]
    assert format_results(results).split("\n") == [
        "x/a.jpg\ta dog runs",
        "x/b.jpg\terror: cannot read image x/b.jpg: truncated",
        "c.png\t",
    ]


def test_the_sat_caption_command_prints_a_line_per_image_and_fails_softly(setup, tmp_path, capsys):
    from show_attend_tell.cli import main

    code = main(
        [
            "--no-progress",
            "caption",
            str(setup["model"]),
            str(setup["photos"]),
            "--device",
            "cpu",
            "--max-length",
            str(MAX_LENGTH),
            "--figures",
            str(tmp_path / "figs"),
        ]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 2  # one file could not be read; the others were captioned
    assert len(lines) == 4 and sum("\terror: " in line for line in lines) == 1
    assert len(list((tmp_path / "figs").glob("*.png"))) == 3
    assert main(["caption", str(tmp_path / "no_model.pt"), str(setup["photos"]), "--device", "cpu"]) == 1
    assert "error: cannot read the model file" in capsys.readouterr().err


def test_a_figures_folder_that_is_an_input_or_inside_one_is_refused_before_any_work(setup, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(setup["photos"], photos)
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    for figures in (photos, photos / "figures"):
        with pytest.raises(SatError, match=r"the figures folder .* is the input .*photos or inside it"):
            caption(setup["model"], [photos], figures_dir=figures)
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before


def test_a_figure_path_holding_something_else_is_refused_and_kept(setup, tmp_path):
    figures = tmp_path / "figures"
    (figures / "b_beach.png").mkdir(parents=True)  # a folder where a figure would go
    with pytest.raises(SatError, match=r"b_beach.png exists and is not an attention figure: refusing"):
        caption(setup["model"], [setup["photos"]], figures_dir=figures)
    (figures / "b_beach.png").rmdir()
    shutil.copy(setup["photos"] / "b_beach.jpg", figures / "a_park.png")  # the user's own file
    with pytest.raises(SatError, match=r"a_park.png exists and is not an attention figure"):
        caption(setup["model"], [setup["photos"]], figures_dir=figures)
    assert (figures / "a_park.png").read_bytes() == (setup["photos"] / "b_beach.jpg").read_bytes()
    assert sorted(p.name for p in figures.iterdir()) == ["a_park.png"]


def test_figures_of_an_earlier_run_are_overwritten(setup, tmp_path):
    figures = tmp_path / "figures"
    first = caption(setup["model"], [setup["photos"]], figures_dir=figures)
    second = caption(setup["model"], [setup["photos"]], figures_dir=figures)
    assert [r.figure for r in second] == [r.figure for r in first]
