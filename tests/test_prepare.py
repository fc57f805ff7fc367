"""From a Karpathy-schema JSON and image folders to captions.csv and images.csv."""

import json
import zipfile

import pandas as pd
import pytest
from conftest import FLICKR8K_SAMPLE
from PIL import Image

from show_attend_tell.errors import SatError
from show_attend_tell.prepare import prepare, read_karpathy
from show_attend_tell.text import read_captions


def make_image(path, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), colour).save(path, quality=90)


def entry(i, split, filename, filepath=None, captions=("A dog runs.", "a dog")):
    image = {
        "filename": filename,
        "imgid": i,
        "split": split,
        "sentids": [10 * i + j for j in range(len(captions))],
        "sentences": [{"raw": raw, "tokens": [], "imgid": i, "sentid": 10 * i + j} for j, raw in enumerate(captions)],
    }
    if filepath:
        image["filepath"] = filepath
    return image


@pytest.fixture
def dataset(tmp_path):
    """Three images in a folder and their Karpathy JSON."""
    images = [entry(0, "train", "a.jpg"), entry(1, "val", "b.jpg"), entry(2, "test", "c.jpg")]
    for image in images:
        make_image(tmp_path / "img" / image["filename"])
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"images": images, "dataset": "toy"}))
    return tmp_path, path, images


def run(tmp_path, json_path, dirs=None, **kw):
    return prepare(
        json_path, dirs or [tmp_path / "img"], tmp_path / "captions.csv", tmp_path / "images.csv", progress=False, **kw
    )


def rewrite(path, images):
    path.write_text(json.dumps({"images": images}))


def test_writes_one_row_per_caption_and_per_image(dataset):
    tmp_path, path, _ = dataset
    run(tmp_path, path)
    captions = read_captions(tmp_path / "captions.csv")
    images = pd.read_csv(tmp_path / "images.csv")
    assert list(captions.columns) == [
        "caption_index",
        "image_index",
        "image_id",
        "split",
        "sentence_id",
        "file",
        "raw",
        "tokens",
    ]
    assert len(captions) == 6 and captions["caption_index"].tolist() == list(range(6))
    assert captions["tokens"].tolist()[:2] == ["a dog runs", "a dog"]
    assert captions["sentence_id"].tolist() == [0, 1, 10, 11, 20, 21]
    assert images["split"].tolist() == ["train", "val", "test"]
    assert images["image_id"].tolist() == [0, 1, 2]
    assert images["n_captions"].tolist() == [2, 2, 2]
    assert all((tmp_path / "img" / f).samefile(p) for f, p in zip(images["file"], images["path"]))


def test_coco_filepaths_are_searched_across_folders_and_restval_joins_train(tmp_path):
    images = [entry(0, "restval", "x.jpg", "train2014"), entry(1, "val", "y.jpg", "val2014")]
    images[0]["cocoid"], images[1]["cocoid"] = 9001, 9002
    make_image(tmp_path / "tr" / "train2014" / "x.jpg")
    make_image(tmp_path / "va" / "val2014" / "y.jpg")
    rewrite(tmp_path / "coco.json", images)
    run(tmp_path, tmp_path / "coco.json", dirs=[tmp_path / "tr", tmp_path / "va"])
    table = pd.read_csv(tmp_path / "images.csv")
    assert table["split"].tolist() == ["train", "val"]
    assert table["image_id"].tolist() == [9001, 9002]
    assert table["file"].tolist() == ["train2014/x.jpg", "val2014/y.jpg"]
    run(tmp_path, tmp_path / "coco.json", dirs=[tmp_path / "tr", tmp_path / "va"], restval="drop")
    assert pd.read_csv(tmp_path / "images.csv")["split"].tolist() == ["val"]


def test_missing_and_corrupt_images_stop_the_run_with_their_list(dataset):
    tmp_path, path, _ = dataset
    (tmp_path / "img" / "a.jpg").unlink()
    data = (tmp_path / "img" / "b.jpg").read_bytes()
    (tmp_path / "img" / "b.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    with pytest.raises(SatError) as error:
        run(tmp_path, path)
    message = str(error.value)
    assert "2 of 3 images" in message and "a.jpg: missing" in message and "b.jpg: unreadable" in message
    assert "bad_images: skip" in message
    assert not (tmp_path / "captions.csv").exists() and not (tmp_path / "images.csv").exists()


def test_an_image_too_large_to_decode_safely_is_unreadable(dataset, decompression_bomb):
    tmp_path, path, _ = dataset
    (tmp_path / "img" / "b.jpg").write_bytes(decompression_bomb.read_bytes())
    with pytest.raises(SatError, match=r"1 of 3 images(.|\n)*b\.jpg: unreadable \(DecompressionBombError"):
        run(tmp_path, path)
    assert not (tmp_path / "captions.csv").exists() and not (tmp_path / "images.csv").exists()


def test_bad_images_can_be_skipped_and_are_counted_in_the_log(dataset, caplog):
    tmp_path, path, _ = dataset
    (tmp_path / "img" / "b.jpg").write_bytes(b"not an image at all")
    run(tmp_path, path, bad_images="skip")
    images = pd.read_csv(tmp_path / "images.csv")
    captions = read_captions(tmp_path / "captions.csv")
    assert images["file"].tolist() == ["a.jpg", "c.jpg"]
    assert images["image_index"].tolist() == [0, 1]
    assert captions["image_index"].tolist() == [0, 0, 1, 1]
    assert "skipped 1 of 3 images" in caplog.text


def test_an_empty_caption_is_a_clear_error(dataset):
    tmp_path, path, images = dataset
    images[1]["sentences"][1]["raw"] = " ... "
    rewrite(path, images)
    with pytest.raises(SatError, match=r"(?s)1 empty captions.*b\.jpg sentence 1"):
        run(tmp_path, path)
    assert not (tmp_path / "captions.csv").exists()


@pytest.mark.parametrize(
    "document, complaint",
    [
        ({"pictures": []}, "an 'images' list"),
        ({"images": []}, "the list is empty"),
        ({"images": [{"split": "train", "sentences": [{"raw": "a"}]}]}, r"images\[0\]: missing 'filename'"),
        ({"images": [{"filename": "a.jpg", "split": "dev", "sentences": [{"raw": "a"}]}]}, "'split' is 'dev'"),
        ({"images": [{"filename": "a.jpg", "split": "train", "sentences": []}]}, "empty 'sentences'"),
        (
            {"images": [{"filename": "a.jpg", "split": "train", "sentences": [{"tokens": ["a"]}]}]},
            r"sentences\[0\].*missing 'raw'",
        ),
        (
            {"images": [{"filename": "a.jpg", "split": "train", "cocoid": "abc", "sentences": [{"raw": "a"}]}]},
            r"images\[0\] \(a\.jpg\): 'cocoid' is 'abc', expected an integer",
        ),
        (
            {"images": [{"filename": "a.jpg", "split": "train", "imgid": 1.5, "sentences": [{"raw": "a"}]}]},
            r"images\[0\] \(a\.jpg\): 'imgid' is 1.5",
        ),
        (
            {"images": [{"filename": "a.jpg", "split": "train", "cocoid": 10**30, "sentences": [{"raw": "a"}]}]},
            f"'cocoid' is {10**30}, beyond a 64-bit integer column",
        ),
        (
            {"images": [{"filename": "a.jpg", "split": "train", "cocoid": None, "sentences": [{"raw": "a"}]}]},
            "'cocoid' is None",
        ),
        (
            {"images": [{"filename": "a.jpg", "split": "train", "sentences": [{"raw": "a", "sentid": "s1"}]}]},
            r"images\[0\] \(a\.jpg\)\.sentences\[0\]: 'sentid' is 's1', expected an integer",
        ),
        (
            {"images": [{"filename": "a.jpg", "split": "train", "sentences": [{"raw": "a", "sentid": True}]}]},
            "'sentid' is True",
        ),
        (
            {"images": [{"filename": "a.jpg", "filepath": 2014, "split": "train", "sentences": [{"raw": "a"}]}]},
            "'filepath' is 2014",
        ),
    ],
)
def test_a_json_not_in_karpathy_schema_is_named_precisely(tmp_path, document, complaint):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(document))
    with pytest.raises(SatError, match="not in Karpathy schema") as error:
        read_karpathy(path)
    assert error.match(complaint)
    assert "\n" not in str(error.value)


def test_files_outside_the_image_folders_are_refused_with_their_list(dataset):
    tmp_path, path, images = dataset
    make_image(tmp_path / "x.jpg")  # a real image beside the image folder, where these entries point
    escapes = [
        ("../x.jpg", None),
        ("sub/../../x.jpg", None),
        (str(tmp_path / "x.jpg"), None),
        ("x.jpg", ".."),
        ("x.jpg", "img/../.."),
        ("x.jpg", str(tmp_path)),
    ]
    rewrite(path, images + [entry(3 + i, "train", name, folder) for i, (name, folder) in enumerate(escapes)])
    with pytest.raises(SatError, match="lists 6 images outside the image folders") as error:
        run(tmp_path, path)
    listed = str(error.value).splitlines()[1:]
    assert listed == [
        f"  images[{3 + i}]: {folder + '/' if folder else ''}{name}" for i, (name, folder) in enumerate(escapes)
    ]
    assert not (tmp_path / "captions.csv").exists() and not (tmp_path / "images.csv").exists()


LEAK = r"1 images are listed in more than one split .*a leak"
TWICE = r"1 images are listed more than once in one split .*count twice"


@pytest.mark.parametrize(
    "twin, refusal, listed",
    [
        (entry(7, "val", "a.jpg"), LEAK, "a.jpg: in train and val"),
        (entry(7, "train", "./b.jpg"), LEAK, "b.jpg: in train and val"),
        (entry(0, "test", "d.jpg"), LEAK, "id 0: a.jpg in train, d.jpg in test"),
        (entry(7, "train", "a.jpg"), TWICE, "a.jpg: 2 times in train"),
        (entry(0, "train", "e.jpg"), TWICE, "id 0: a.jpg in train, e.jpg in train"),
    ],
    ids=["leak-same-file", "leak-same-file-spelt-otherwise", "leak-same-id", "twice-same-file", "twice-same-id"],
)
def test_an_image_listed_twice_is_refused_with_the_list(dataset, twin, refusal, listed):
    """In two splits it would inflate a split's scores (a leak); twice in one, its captions would count twice."""
    tmp_path, path, images = dataset
    make_image(tmp_path / "img" / twin["filename"])
    rewrite(path, images + [twin])
    with pytest.raises(SatError, match=refusal) as error:
        run(tmp_path, path)
    assert f"\n  {listed}" in str(error.value)
    assert not (tmp_path / "captions.csv").exists() and not (tmp_path / "images.csv").exists()


def test_a_restval_image_also_in_val_leaks_unless_restval_is_dropped(tmp_path):
    images = [entry(0, "restval", "x.jpg", "train2014"), entry(1, "val", "y.jpg", "val2014")]
    images[0]["cocoid"] = images[1]["cocoid"] = 9001
    make_image(tmp_path / "img" / "train2014" / "x.jpg")
    make_image(tmp_path / "img" / "val2014" / "y.jpg")
    rewrite(tmp_path / "coco.json", images)
    with pytest.raises(SatError, match="id 9001: train2014/x.jpg in train, val2014/y.jpg in val"):
        run(tmp_path, tmp_path / "coco.json")
    run(tmp_path, tmp_path / "coco.json", restval="drop")
    assert pd.read_csv(tmp_path / "images.csv")["file"].tolist() == ["val2014/y.jpg"]


def test_a_file_that_is_not_json_is_a_clear_error(tmp_path):
    (tmp_path / "d.json").write_text("{images: [")
    with pytest.raises(SatError, match="not valid JSON"):
        read_karpathy(tmp_path / "d.json")


def test_json_nested_too_deeply_for_the_parser_is_one_clear_error(tmp_path):
    (tmp_path / "d.json").write_text("[" * 100_000 + "]" * 100_000)  # valid JSON; the parser recurses per level
    with pytest.raises(SatError, match=r"^\S*d.json is not valid JSON: nested too deeply$"):
        read_karpathy(tmp_path / "d.json")


@pytest.mark.skipif(not FLICKR8K_SAMPLE.is_dir(), reason="real Flickr8k sample (../shared/data) not present")
def test_real_flickr8k_sample_prepares_all_split_images(tmp_path):
    with zipfile.ZipFile(FLICKR8K_SAMPLE / "caption_datasets.zip") as z:
        z.extractall(tmp_path / "text")
    with zipfile.ZipFile(FLICKR8K_SAMPLE / "Flickr8k_Dataset.zip") as z:
        z.extractall(tmp_path / "images")
    prepare(
        tmp_path / "text" / "dataset_flickr8k.json",
        [tmp_path / "images" / "Flicker8k_Dataset"],
        tmp_path / "captions.csv",
        tmp_path / "images.csv",
        progress=False,
    )
    images = pd.read_csv(tmp_path / "images.csv")
    assert images["split"].value_counts().to_dict() == {"train": 753, "test": 125, "val": 113}
    assert len(read_captions(tmp_path / "captions.csv")) == 5 * 991
