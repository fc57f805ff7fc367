"""Feature extraction: HDF5 layout, agreement with a direct forward pass, determinism and resuming."""

from __future__ import annotations

import csv
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from show_attend_tell import __version__, encoders, encoding, features, images, precision
from show_attend_tell.atomic import partial_path
from show_attend_tell.devices import resolve_device
from show_attend_tell.errors import SatError

ENCODER, LAYER, SIZE = "efficientnet_lite0", "blocks.4", 64
IDS = [42, 7, 19, 3, 100, 8, 55]
SIZES = [(80, 60), (60, 90), (75, 75), (120, 70), (64, 64), (200, 150), (90, 120)]


def write_images(folder: Path, sizes=SIZES, ids=IDS) -> Path:
    """Smooth random JPEG/PNG photos (one grayscale) and the images.csv that lists them."""
    rng = np.random.default_rng(0)
    rows = []
    for i, ((w, h), image_id) in enumerate(zip(sizes, ids, strict=True)):
        coarse = (rng.random((h // 8 + 1, w // 8 + 1, 3)) * 255).astype(np.uint8)
        image = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        if i == 2:
            image = image.convert("L")
        name = f"img_{image_id}.{'png' if i == 4 else 'jpg'}"
        image.save(folder / name)
        rows.append([i, image_id, "train" if i < 5 else "val", name, str(folder / name)])
    path = folder / "images.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(images.COLUMNS)
        writer.writerows(rows)
    return path


@pytest.fixture
def images_csv(tmp_path: Path) -> Path:
    return write_images(tmp_path)


def run(images_csv: Path, out: Path, **kwargs) -> Path:
    settings = dict(
        encoder=ENCODER, layer=LAYER, image_size=SIZE, batch_size=2, workers=0, progress=False, precision="float32"
    )
    return features.extract(images_csv, out, **(settings | kwargs))


class CountingLoads:
    """Replaces ``images.load_image``: counts the images read, and fails at the ``fail_at``-th to simulate a kill."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls, self.fail_at, self.load = 0, fail_at, images.load_image

    def __call__(self, path, image_size):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return self.load(path, image_size)


def contents(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        data = {name: f[name][()] for name in f}
        data.update({f"attr:{k}": v for k, v in f.attrs.items()})
    return data


def assert_same_contents(a: Path, b: Path) -> None:
    ca, cb = contents(a), contents(b)
    assert ca.keys() == cb.keys()
    for key in ca:
        np.testing.assert_array_equal(ca[key], cb[key], err_msg=key)


def test_preprocess_is_resize_shorter_side_then_centre_crop():
    rng = np.random.default_rng(1)
    photo = Image.fromarray((rng.random((90, 130, 3)) * 255).astype(np.uint8))
    out = images.preprocess(photo, 64)
    assert out.dtype == torch.uint8 and out.shape == (3, 64, 64)
    r = encoders.resize_shorter(64)
    resized = photo.resize((round(130 * r / 90), r), Image.Resampling.BILINEAR)
    left, top = (resized.width - 64) // 2, (resized.height - 64) // 2
    expected = np.asarray(resized.crop((left, top, left + 64, top + 64))).transpose(2, 0, 1)
    assert np.abs(out.numpy().astype(int) - expected).max() <= 1


def test_big_jpegs_are_decoded_at_reduced_scale_without_changing_the_picture(tmp_path):
    rng = np.random.default_rng(2)
    coarse = (rng.random((20, 25, 3)) * 255).astype(np.uint8)
    Image.fromarray(coarse).resize((1000, 800), Image.Resampling.BICUBIC).save(tmp_path / "big.jpg", quality=95)
    drafted = images.load_image(tmp_path / "big.jpg", 64).numpy().astype(int)
    with Image.open(tmp_path / "big.jpg") as full:
        exact = images.preprocess(full.convert("RGB"), 64).numpy().astype(int)
    assert np.abs(drafted - exact).mean() < 2


def test_unreadable_image_is_a_sat_error(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not a picture")
    with pytest.raises(SatError, match="cannot read image .*bad.jpg"):
        images.load_image(tmp_path / "bad.jpg", 64)


def test_an_image_too_large_to_decode_safely_is_a_sat_error(decompression_bomb):
    with pytest.raises(SatError, match="cannot read image .*bomb.png: .*decompression bomb"):
        images.load_image(decompression_bomb, 64)


def test_layout_ids_and_attributes(images_csv, tmp_path):
    out = run(images_csv, tmp_path / "features.h5")
    assert out == tmp_path / "features.h5" and not partial_path(out).exists()
    h, w, d = encoders.output_grid(ENCODER, LAYER, SIZE)
    with h5py.File(out, "r") as f:
        feats = f["features"]
        assert feats.dtype == np.float16
        assert feats.shape == (len(IDS), h * w, d)
        assert feats.chunks == (1, h * w, d)
        assert feats.compression is None
        assert f["image_ids"].dtype == np.int64 and f["image_ids"][()].tolist() == IDS
        files = [f"img_{i}.{'png' if k == 4 else 'jpg'}" for k, i in enumerate(IDS)]
        assert [s.decode() for s in f["files"][()]] == files
        assert [s.decode() for s in f["splits"][()]] == ["train"] * 5 + ["val"] * 2
        a = f.attrs
        assert (a["encoder"], a["layer"], list(a["grid"]), a["dim"]) == (ENCODER, LAYER, [h, w], d)
        assert (a["image_size"], a["crop"], a["resize_shorter"]) == (SIZE, SIZE, encoders.resize_shorter(SIZE))
        assert list(a["mean"]) == [0.5] * 3 and list(a["std"]) == [0.5] * 3
        assert "efficientnet-lite0" in a["weights"] and "centre crop" in a["preprocessing"]
        assert a["n_images"] == a["n_done"] == len(IDS)
        assert a["created_by"] == f"show_attend_tell {__version__}"


def test_values_equal_a_direct_forward_pass(images_csv, tmp_path):
    out = run(images_csv, tmp_path / "features.h5", layer="blocks.6", batch_size=3)
    model = encoders.build(ENCODER, "blocks.6")
    with open(images_csv, newline="") as f:
        paths = [row["path"] for row in csv.DictReader(f)]
    batch = torch.stack([images.load_image(p, SIZE) for p in paths])
    with torch.inference_mode():
        expected = model(encoders.normalize(batch, ENCODER)).flatten(2).transpose(1, 2)
    with h5py.File(out, "r") as f:
        stored = f["features"][()].astype(np.float32)
    np.testing.assert_allclose(stored, expected.numpy(), rtol=2e-3, atol=2e-3)


def test_stacked_encoders_write_each_one_s_vectors_side_by_side(images_csv, tmp_path):
    stacked = "efficientnet_lite0+efficientnet_lite2"
    out = run(images_csv, tmp_path / "stacked.h5", encoder=stacked, layer="blocks.6", batch_size=3)
    alone = [
        run(images_csv, tmp_path / f"{part}.h5", encoder=part, layer="blocks.6", batch_size=3)
        for part in encoders.parts(stacked)
    ]
    with h5py.File(out, "r") as f:
        assert (f.attrs["encoder"], f.attrs["dim"]) == (stacked, 320 + 352)
        assert "efficientnet-lite0" in f.attrs["weights"] and "efficientnet-lite2" in f.attrs["weights"]
        both = f["features"][()]
    parts = [h5py.File(path, "r")["features"][()] for path in alone]
    np.testing.assert_array_equal(both, np.concatenate(parts, axis=-1))


def test_bfloat16_features_point_where_float32_ones_do_and_the_file_says_which(images_csv, tmp_path):
    exact = run(images_csv, tmp_path / "float32.h5", layer="blocks.6")
    fast = run(images_csv, tmp_path / "bfloat16.h5", layer="blocks.6", precision="bfloat16")
    with h5py.File(exact, "r") as a, h5py.File(fast, "r") as b:
        assert (a.attrs["precision"], b.attrs["precision"]) == ("float32", "bfloat16")
        x, y = (torch.from_numpy(f["features"][()]).float() for f in (a, b))
    cosine = torch.nn.functional.cosine_similarity(x, y, dim=-1)
    assert cosine.mean() > 0.99 and cosine.min() > 0.9  # real Flickr8k photos: mean 0.9985 (README)
    assert not torch.equal(x, y)


def test_auto_precision_is_float32_without_native_bfloat16(images_csv, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "native_bfloat16", lambda device_type: False)
    with h5py.File(run(images_csv, tmp_path / "features.h5", precision="auto"), "r") as f:
        assert f.attrs["precision"] == "float32"


def test_float16_extraction_on_a_cpu_is_refused_before_any_file_is_written(images_csv, tmp_path):
    with pytest.raises(SatError, match="float16 is for feature extraction on CUDA only"):
        run(images_csv, tmp_path / "features.h5", precision="float16")
    assert list(tmp_path.glob("features.h5*")) == []


def test_auto_precision_takes_bfloat16_only_where_the_probe_found_it_faster(images_csv, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "native_bfloat16", lambda device_type: True)
    encode = encoding.encode_batch

    def slow_bfloat16(model, images, name, device):
        if next(model.parameters()).dtype == torch.bfloat16:
            time.sleep(0.2)
        return encode(model, images, name, device)

    monkeypatch.setattr(encoding, "encode_batch", slow_bfloat16)
    with h5py.File(run(images_csv, tmp_path / "features.h5", precision="auto"), "r") as f:
        assert f.attrs["precision"] == "float32"


def test_random_weights_are_recorded(images_csv, tmp_path):
    out = run(images_csv, tmp_path / "features.h5", encoder="resnet101", layer="layer3", pretrained=False)
    with h5py.File(out, "r") as f:
        assert f.attrs["weights"] == "random (pretrained=False)"
        assert f["features"].shape == (len(IDS), 16, 1024)


def test_runs_are_byte_identical_with_or_without_worker_processes(images_csv, tmp_path):
    a = run(images_csv, tmp_path / "a.h5", workers=0)
    b = run(images_csv, tmp_path / "b.h5", workers=1)
    assert a.read_bytes() == b.read_bytes()


def test_interrupted_run_resumes_where_it_stopped(images_csv, tmp_path, monkeypatch, caplog):
    clean = run(images_csv, tmp_path / "clean.h5")
    out = tmp_path / "features.h5"
    monkeypatch.setattr(images, "load_image", CountingLoads(fail_at=6))  # dies in the 3rd batch of 2
    with pytest.raises(KeyboardInterrupt):
        run(images_csv, out)
    assert not out.exists()
    with h5py.File(partial_path(out), "r") as f:
        assert f.attrs["n_done"] == 4

    loads = CountingLoads()
    monkeypatch.setattr(images, "load_image", loads)
    with caplog.at_level(logging.INFO, logger=features.__name__):
        run(images_csv, out)
    assert loads.calls == len(IDS) - 4
    assert "4 of 7 images already done" in caplog.text
    assert not partial_path(out).exists()
    assert out.read_bytes() == clean.read_bytes()


KILLED_RUN = """
import os, signal, sys
from show_attend_tell import features
encode, calls = features.encode_batch, []
def encode_then_die(*args):
    calls.append(1)
    if len(calls) == 3:  # two batches of two written, the next ones decoded or decoding
        os.kill(os.getpid(), signal.SIGKILL)
    return encode(*args)
features.encode_batch = encode_then_die
features.extract(sys.argv[1], sys.argv[2], encoder="{ENCODER}", layer="{LAYER}", image_size={SIZE},
                 batch_size=2, workers=0, progress=False)
"""


def test_hard_killed_run_resumes(images_csv, tmp_path):
    out = tmp_path / "features.h5"
    script = KILLED_RUN.format(ENCODER=ENCODER, LAYER=LAYER, SIZE=SIZE)
    killed = subprocess.run([sys.executable, "-c", script, str(images_csv), str(out)], capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    with h5py.File(partial_path(out), "r") as f:
        assert f.attrs["n_done"] == 4
    assert_same_contents(run(images_csv, out), run(images_csv, tmp_path / "clean.h5"))


def test_partial_from_other_settings_is_discarded(images_csv, tmp_path, monkeypatch, caplog):
    out = tmp_path / "features.h5"
    monkeypatch.setattr(images, "load_image", CountingLoads(fail_at=4))
    with pytest.raises(KeyboardInterrupt):
        run(images_csv, out, image_size=72)
    loads = CountingLoads()
    monkeypatch.setattr(images, "load_image", loads)
    with caplog.at_level(logging.INFO, logger=features.__name__):
        run(images_csv, out)
    assert loads.calls == len(IDS)
    assert "discarding" in caplog.text
    assert_same_contents(out, run(images_csv, tmp_path / "clean.h5"))


def test_partial_of_code_that_computed_otherwise_is_discarded(images_csv, tmp_path, monkeypatch, caplog):
    """A .partial without this code's `arithmetic` (as one left by a version before the encoder was fused)."""
    out = tmp_path / "features.h5"
    monkeypatch.setattr(images, "load_image", CountingLoads(fail_at=4))
    with pytest.raises(KeyboardInterrupt):
        run(images_csv, out)
    with h5py.File(partial_path(out), "r+") as f:
        del f.attrs["arithmetic"]
    loads = CountingLoads()
    monkeypatch.setattr(images, "load_image", loads)
    with caplog.at_level(logging.INFO, logger=features.__name__):
        run(images_csv, out)
    assert loads.calls == len(IDS) and "discarding" in caplog.text


def test_unreadable_partial_is_discarded(images_csv, tmp_path):
    out = tmp_path / "features.h5"
    partial_path(out).write_bytes(b"half-written HDF5")
    assert_same_contents(run(images_csv, out), run(images_csv, tmp_path / "clean.h5"))


def test_unknown_encoder_or_layer_names_the_choices(images_csv, tmp_path):
    with pytest.raises(SatError, match="choose one of: vgg19, resnet101"):
        run(images_csv, tmp_path / "f.h5", encoder="vgg16")
    with pytest.raises(SatError, match="choose one of: blocks.6, blocks.4"):
        run(images_csv, tmp_path / "f.h5", layer="blocks.9")
    assert list(tmp_path.glob("f.h5*")) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda_is_a_sat_error(images_csv, tmp_path):
    with pytest.raises(SatError, match="CUDA is not available"):
        run(images_csv, tmp_path / "f.h5", device="cuda")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_job_declared_to_have_a_gpu_that_sees_none_stops_with_a_clear_message(images_csv, tmp_path):
    with pytest.raises(SatError, match=r"declared to have 1 GPU\(s\) \(resource gpu=1\) but 0 are visible on "):
        run(images_csv, tmp_path / "f.h5", declared_gpus=1)
    assert list(tmp_path.glob("f.h5*")) == []
    assert resolve_device("cpu", declared_gpus=1) == torch.device("cpu"), "device cpu is a deliberate choice"


def test_images_csv_must_list_indices_in_order(tmp_path):
    path = tmp_path / "images.csv"
    path.write_text("image_index,image_id,split,file,path\n1,5,train,a.jpg,a.jpg\n")
    with pytest.raises(SatError, match="image_index 1, expected 0"):
        images.read_images_csv(path)
    path.write_text("image_index,image_id,split,file,path\n0,x5,train,a.jpg,a.jpg\n")
    with pytest.raises(SatError, match="image_id 'x5', expected an integer"):
        images.read_images_csv(path)
    path.write_text("image_index,image_id,file\n0,5,a.jpg\n")
    with pytest.raises(SatError, match="missing column"):
        images.read_images_csv(path)


def test_shards_merge_into_what_a_single_extraction_writes(images_csv, tmp_path):
    single = run(images_csv, tmp_path / "single.h5")
    shards = [run(images_csv, tmp_path / f"shard{k}.h5", shard=(k, 3)) for k in (2, 0, 1)]
    with h5py.File(shards[1], "r") as f:
        assert list(f.attrs["shard_rows"]) == [0, 2] and f["features"].shape[0] == 2
    merged = features.merge_shards(images_csv, shards, tmp_path / "merged.h5")
    assert_same_contents(merged, single)


def test_merging_refuses_incomplete_missing_or_foreign_shards(images_csv, tmp_path, monkeypatch):
    shards = [run(images_csv, tmp_path / f"shard{k}.h5", shard=(k, 2)) for k in range(2)]
    with pytest.raises(SatError, match="cover images 0-4, not 0-7"):
        features.merge_shards(images_csv, shards[:1], tmp_path / "m.h5")
    other = run(images_csv, tmp_path / "other.h5", shard=(1, 2), image_size=72)
    with pytest.raises(SatError, match="other settings .*image_size"):
        features.merge_shards(images_csv, [shards[0], other], tmp_path / "m.h5")
    monkeypatch.setattr(images, "load_image", CountingLoads(fail_at=2))
    with pytest.raises(KeyboardInterrupt):
        run(images_csv, tmp_path / "torn.h5", shard=(1, 2))
    with pytest.raises(SatError, match="incomplete"):
        features.merge_shards(images_csv, [shards[0], partial_path(tmp_path / "torn.h5")], tmp_path / "m.h5")
    assert not list(tmp_path.glob("m.h5*"))
    with pytest.raises(SatError, match="shard 2 of 2 does not exist"):
        features.shard_rows(7, 2, 2, batch_size=2)
    with pytest.raises(SatError, match="5 shards for 7 images in 4 batches of 2"):
        features.shard_rows(7, 0, 5, batch_size=2)


def test_shards_split_at_batch_boundaries_and_cover_every_image_once():
    for n_images, n, batch in ((7, 3, 2), (100, 4, 32), (1000, 7, 16), (5, 1, 8)):
        ranges = [features.shard_rows(n_images, k, n, batch) for k in range(n)]
        assert ranges[0][0] == 0 and ranges[-1][1] == n_images
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert all(lo % batch == 0 and hi > lo for lo, hi in ranges)


def test_shards_from_the_command_line(images_csv, tmp_path):
    from show_attend_tell.cli import main

    common = ["--no-progress", "features", str(images_csv)]
    options = ["--encoder", ENCODER, "--layer", LAYER, "--image-size", str(SIZE), "--workers", "0", "--batch-size", "2"]
    for k in range(2):
        assert main(common + [str(tmp_path / f"s{k}.h5"), *options, "--shard", f"{k}/2"]) == 0
    assert (
        main(
            [
                "merge-features",
                str(images_csv),
                str(tmp_path / "m.h5"),
                str(tmp_path / "s1.h5"),
                str(tmp_path / "s0.h5"),
            ]
        )
        == 0
    )
    assert_same_contents(tmp_path / "m.h5", run(images_csv, tmp_path / "single.h5"))
    assert main(common + [str(tmp_path / "x.h5"), *options, "--shard", "3/2"]) == 1
