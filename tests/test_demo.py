"""The offline demo dataset: deterministic, Karpathy-schema, and every caption true of its image."""

import colorsys
import json
import re

import numpy as np
import pytest
from PIL import Image

from show_attend_tell import demo
from show_attend_tell.demo import generate
from show_attend_tell.demo_scene import COLOURS, SHAPES, SIZES
from show_attend_tell.errors import SatError

SIZE = 128
# Rough hue of each colour name on the colour wheel (degrees), independent of the module's exact palette.
HUES = {"red": 0, "orange": 30, "yellow": 55, "green": 130, "blue": 230, "purple": 280}
RELATION_WORDS = {"left": "left", "right": "right", "above": "above", "below": "below", "under": "below"}


def files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def load(folder):
    data = json.loads((folder / "dataset_demo.json").read_text())
    objects = json.loads((folder / "objects.json").read_text())
    return data, objects


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    assert generate(out, 6, 2, 2, image_size=SIZE, seed=7, progress=False) == out
    return out


@pytest.fixture(scope="module")
def larger(tmp_path_factory):
    """More images for the statistical checks (relations, sizes), still small."""
    out = tmp_path_factory.mktemp("demo_larger") / "demo"
    generate(out, 60, 0, 0, image_size=SIZE, seed=3, progress=False)
    return out


def centre(box):
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def where(a, b):
    """Where box a is with respect to box b: the dominant axis of the centres' offset decides."""
    (ax, ay), (bx, by) = centre(a), centre(b)
    dx, dy = bx - ax, by - ay
    if abs(dx) >= abs(dy):
        return "left" if dx > 0 else "right"
    return "above" if dy > 0 else "below"


def parse(tokens):
    """Noun phrases ([size] [colour] shape) and relation words of a caption, in order.

    Returns a list of ("np", {attr: word}) and ("rel", relation) items; fails on a dangling attribute.
    """
    items, pending = [], {}
    for word in tokens:
        if word in SIZES:
            assert "size" not in pending and "colour" not in pending, tokens
            pending["size"] = word
        elif word in COLOURS:
            assert "colour" not in pending, tokens
            pending["colour"] = word
        elif word in SHAPES:
            items.append(("np", {**pending, "shape": word}))
            pending = {}
        else:
            assert not pending, f"attribute without a shape in {tokens}"
            if word in RELATION_WORDS:
                items.append(("rel", RELATION_WORDS[word]))
    assert not pending, tokens
    return items


def matching(np_, objects):
    return [o for o in objects if all(o[k] == v for k, v in np_.items())]


def test_same_seed_same_bytes_other_seed_other_images(dataset, tmp_path):
    again = generate(tmp_path / "again", 6, 2, 2, image_size=SIZE, seed=7, progress=False)
    a, b = files(dataset), files(again)
    assert (
        sorted(a)
        == sorted(b)
        == sorted(["dataset_demo.json", "objects.json"] + [f"images/demo_{i:06d}.jpg" for i in range(10)])
    )
    assert a == b
    other = files(generate(tmp_path / "other", 6, 2, 2, image_size=SIZE, seed=8, progress=False))
    for name in a:
        if name.startswith("images/"):
            assert a[name] != other[name], name
    assert a["objects.json"] != other["objects.json"]


def test_images_do_not_depend_on_split_sizes(dataset, tmp_path):
    resplit = tmp_path / "resplit"
    generate(resplit, 1, 4, 5, image_size=SIZE, seed=7, progress=False)
    a, b = files(dataset), files(resplit)
    del a["dataset_demo.json"], b["dataset_demo.json"]
    assert a == b
    (da, _), (db, _) = load(dataset), load(resplit)
    assert [im["sentences"] for im in da["images"]] == [im["sentences"] for im in db["images"]]
    assert [im["split"] for im in db["images"]] == ["train"] + ["val"] * 4 + ["test"] * 5


def test_json_files_end_with_newline_and_nothing_else_is_written(dataset):
    assert sorted(p.name for p in dataset.iterdir()) == ["dataset_demo.json", "images", "objects.json"]
    for name in ("dataset_demo.json", "objects.json"):
        text = (dataset / name).read_text()
        assert text.endswith("}\n") and text.count("\n") == 1
    assert not dataset.with_name("demo.partial").exists()


def test_karpathy_schema(dataset):
    data, objects = load(dataset)
    assert list(data) == ["dataset", "images"] and data["dataset"] == "demo"
    assert [im["split"] for im in data["images"]] == ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    all_sentids = []
    for i, im in enumerate(data["images"]):
        assert set(im) == {"filename", "filepath", "imgid", "split", "sentids", "sentences"}
        assert im["imgid"] == i and im["filename"] == f"demo_{i:06d}.jpg" and im["filepath"] == "images"
        assert (dataset / im["filepath"] / im["filename"]).is_file()
        assert len(im["sentences"]) == 5 and len(im["sentids"]) == 5
        assert [s["sentid"] for s in im["sentences"]] == im["sentids"]
        assert len({s["raw"] for s in im["sentences"]}) == 5, "captions of one image must be distinct"
        for s in im["sentences"]:
            assert set(s) == {"raw", "tokens", "imgid", "sentid"} and s["imgid"] == i
            assert s["tokens"] == re.findall(r"[a-z0-9]+", s["raw"].lower())
            assert 4 <= len(s["tokens"]) <= 20
        all_sentids += im["sentids"]
    assert len(set(all_sentids)) == len(all_sentids)
    assert set(objects["images"]) == {im["filename"] for im in data["images"]}
    assert objects["image_size"] == SIZE


def test_objects_sidecar(larger):
    _, objects = load(larger)
    counts = set()
    for name, objs in objects["images"].items():
        counts.add(len(objs))
        assert 1 <= len(objs) <= 3
        keys = [(o["size"], o["colour"], o["shape"]) for o in objs]
        assert len(set(keys)) == len(keys), f"{name}: two identical objects"
        for o in objs:
            assert set(o) == {"shape", "colour", "size", "bbox"}
            assert o["shape"] in SHAPES and o["colour"] in COLOURS and o["size"] in SIZES
            assert all(isinstance(v, int) for v in o["bbox"])
    assert counts == {1, 2, 3}


def test_captions_name_objects_in_the_image(larger):
    data, objects = load(larger)
    vocab = set()
    for im in data["images"]:
        objs = objects["images"][im["filename"]]
        for s in im["sentences"]:
            vocab.update(s["tokens"])
            phrases = [x for kind, x in parse(s["tokens"]) if kind == "np"]
            assert phrases, s["raw"]
            for np_ in phrases:
                assert len(matching(np_, objs)) == 1, f"{s['raw']!r}: {np_} is not one object of {objs}"
            counted = re.match(r"(there (is|are) )?(one|two|three) shapes? ", " ".join(s["tokens"]))
            if counted:
                assert ["one", "two", "three"].index(counted.group(3)) + 1 == len(objs), s["raw"]
    assert len(vocab) < 60, sorted(vocab)


def test_spatial_relations_are_true(larger):
    data, objects = load(larger)
    n_relations = 0
    seen = set()
    for im in data["images"]:
        objs = objects["images"][im["filename"]]
        for s in im["sentences"]:
            items = parse(s["tokens"])
            for k, (kind, rel) in enumerate(items):
                if kind != "rel":
                    continue
                assert 0 < k < len(items) - 1 and items[k - 1][0] == items[k + 1][0] == "np", s["raw"]
                (a,), (b,) = matching(items[k - 1][1], objs), matching(items[k + 1][1], objs)
                assert where(a["bbox"], b["bbox"]) == rel, f"{s['raw']!r} but boxes {a['bbox']} {b['bbox']}"
                n_relations += 1
                seen.add(rel)
    assert n_relations > 30
    assert seen == {"left", "right", "above", "below"}


def test_boxes_inside_crop_apart_and_sizes_distinct(larger):
    _, objects = load(larger)
    lo, hi = SIZE * 16 / 256, SIZE * 240 / 256
    sides = {"small": [], "large": []}
    for objs in objects["images"].values():
        for o in objs:
            x0, y0, x1, y1 = o["bbox"]
            assert lo < x0 < x1 < hi and lo < y0 < y1 < hi, o
            sides[o["size"]].append(max(x1 - x0, y1 - y0))
        for i, a in enumerate(objs):
            for b in objs[i + 1 :]:
                A, B = a["bbox"], b["bbox"]
                assert A[2] <= B[0] or B[2] <= A[0] or A[3] <= B[1] or B[3] <= A[1], (a, b)
    assert sides["small"] and sides["large"]
    assert max(sides["small"]) < 0.7 * min(sides["large"])
    assert 0.1 * SIZE < min(sides["small"]) and max(sides["large"]) < 0.5 * SIZE


def test_images_show_the_objects(larger):
    _, objects = load(larger)
    for name, objs in objects["images"].items():
        with Image.open(larger / "images" / name) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (SIZE, SIZE)
            assert "exif" not in im.info
            pixels = np.asarray(im, dtype=np.float64)
        background = np.ones((SIZE, SIZE), dtype=bool)
        for o in objs:
            x0, y0, x1, y1 = o["bbox"]
            background[y0:y1, x0:x1] = False
        bg = pixels[background].mean(axis=0)
        for o in objs:
            x0, y0, x1, y1 = o["bbox"]
            w, h = x1 - x0, y1 - y0
            # the middle of the box is inside every shape (a star's core too)
            patch = pixels[y0 + int(0.42 * h) : y0 + int(0.58 * h) + 1, x0 + int(0.42 * w) : x0 + int(0.58 * w) + 1]
            mean = patch.reshape(-1, 3).mean(axis=0)
            hue, saturation, _ = colorsys.rgb_to_hsv(*mean / 255)
            distances = {c: abs((360 * hue - h + 180) % 360 - 180) for c, h in HUES.items()}  # around the wheel
            assert min(distances, key=distances.get) == o["colour"], (name, o, mean)
            assert distances[o["colour"]] < 15 and saturation > 0.5, (name, o, mean)
            assert np.linalg.norm(mean - bg) > 80, (name, o, mean, bg)


def test_backgrounds_vary(larger):
    _, objects = load(larger)
    means = []
    for name in list(objects["images"])[:20]:
        with Image.open(larger / "images" / name) as im:
            corner = np.asarray(im, dtype=np.float64)[:12, :12]
        means.append(corner.reshape(-1, 3).mean(axis=0))
    assert np.ptp(np.array(means), axis=0).max() > 20


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((-1, 2, 2), {}, "n_train"),
        ((2, -1, 2), {}, "n_val"),
        ((2, 2, -3), {}, "n_test"),
        ((0, 0, 0), {}, "at least one image"),
        ((2, 1, 1), {"image_size": 63}, "image_size"),
        ((2, 1, 1), {"seed": -1}, "seed"),
        ((2.5, 1, 1), {}, "integer"),
    ],
)
def test_invalid_arguments(tmp_path, args, kwargs, message):
    with pytest.raises(SatError, match=message):
        generate(tmp_path / "out", *args, progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_error_mid_generation_leaves_no_folder(tmp_path, monkeypatch):
    real = demo._save_jpeg
    calls = []

    def failing(pixels, path):
        calls.append(path)
        if len(calls) > 3:
            raise OSError("disk full")
        real(pixels, path)

    monkeypatch.setattr(demo, "_save_jpeg", failing)
    with pytest.raises(OSError, match="disk full"):
        generate(tmp_path / "out", 6, 2, 2, image_size=SIZE, progress=False)
    assert len(calls) == 4
    assert list(tmp_path.iterdir()) == []


def test_regenerating_replaces_the_folder_it_wrote_but_not_one_holding_a_users_file(tmp_path):
    out = tmp_path / "out"
    generate(out, 3, 0, 0, image_size=64, progress=False)
    generate(out, 1, 1, 0, image_size=64, progress=False)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "dataset_demo.json",
        "images",
        "images/demo_000000.jpg",
        "images/demo_000001.jpg",
        "objects.json",
    ]
    assert list(tmp_path.iterdir()) == [out]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SatError, match="did not write: refusing to replace it"):
        generate(out, 2, 0, 0, image_size=64, progress=False)
    assert (out / "notes.txt").read_text() == "mine" and len(list((out / "images").iterdir())) == 2
