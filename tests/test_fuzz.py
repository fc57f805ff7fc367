"""Every reader of user files, fed a few hundred seeded corruptions: each ends in success or a SatError
(the CLI's one `error:` line), never another exception (a traceback), and writes nothing half-done.

Corruptions: byte-level (truncation, flipped and inserted bytes) for binary files, and structural (a
value replaced by one of the wrong type or range, a key removed) for JSON, model documents and settings.
"""

from __future__ import annotations

import copy
import io
import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_model_files import FEATURES, VOCAB, small_model

from show_attend_tell import checkpoint, config, prepare
from show_attend_tell.distributed import World
from show_attend_tell.errors import SatError
from show_attend_tell.images import load_image
from show_attend_tell.model import load_model, save_model
from show_attend_tell.settings import Settings

TRIES = 200
ODD_VALUES = [None, True, -1, 0, 2**40, 1e308, float("nan"), "", "../../etc/passwd", "x" * 300, [], {}, [1, "a"]]


def corrupt_bytes(data: bytes, rng: random.Random) -> bytes:
    """A truncation, a few flipped bytes, or a few inserted bytes."""
    kind = rng.choice(("truncate", "flip", "insert"))
    if kind == "truncate":
        return data[: rng.randrange(len(data))]
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(out))
        if kind == "flip":
            out[i] ^= 1 << rng.randrange(8)
        else:
            out[i:i] = bytes([rng.randrange(256)])
    return bytes(out)


def paths(value, prefix=()):
    """Every (path, value) below ``value``'s dicts and lists."""
    yield prefix, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, (*prefix, i))


def corrupt_structure(document, rng: random.Random, odd=ODD_VALUES):
    """A deep copy of ``document`` with one value swapped for an odd one, or one key deleted."""
    document = copy.deepcopy(document)
    path, _ = rng.choice([p for p in paths(document) if p[0]])
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and rng.random() < 0.3:
        del parent[path[-1]]
    else:
        parent[path[-1]] = copy.deepcopy(rng.choice(odd))
    return document


def outcome(read, *args) -> str:
    """'ok' or 'refused' for ``read(*args)``: anything but a SatError fails the test, with the exception it raised."""
    try:
        read(*args)
    except SatError as e:
        assert str(e).strip(), "an empty error message"
        return "refused"
    return "ok"


def karpathy() -> dict:
    images = [
        {"filename": f"{i}.jpg", "imgid": i, "split": split, "sentids": [2 * i, 2 * i + 1],
         "sentences": [{"raw": "A dog runs.", "tokens": ["a", "dog", "runs"], "imgid": i, "sentid": 2 * i + j}
                       for j in range(2)]}
        for i, split in enumerate(("train", "train", "val", "test"))
    ]  # fmt: skip
    return {"images": images, "dataset": "flickr8k"}


def test_karpathy_json(tmp_path):
    rng, seen = random.Random(1), set()
    text = json.dumps(karpathy()).encode()
    for i in range(TRIES):
        path = tmp_path / f"{i}.json"
        if i % 2:
            path.write_bytes(corrupt_bytes(text, rng))
        else:
            path.write_text(json.dumps(corrupt_structure(karpathy(), rng)))
        seen.add(outcome(prepare.read_karpathy, path))
    assert seen == {"ok", "refused"}


def test_images(tmp_path):
    rng, seen = random.Random(2), set()
    originals = []
    for fmt in ("JPEG", "PNG"):
        buffer = io.BytesIO()
        Image.effect_noise((48, 40), 60).convert("RGB").save(buffer, fmt)
        originals.append((fmt.lower(), buffer.getvalue()))
    for i in range(TRIES):
        suffix, data = originals[i % 2]
        path = tmp_path / f"{i}.{suffix}"
        path.write_bytes(corrupt_bytes(data, rng))
        seen.add(outcome(load_image, path, 32))
    assert seen == {"ok", "refused"}


def test_model_files(tmp_path):
    rng, seen = random.Random(3), set()
    model = small_model()
    good = tmp_path / "good.pt"
    save_model(good, model, model.state_dict(), vocab=VOCAB, features=FEATURES)
    data = good.read_bytes()
    document = torch.load(good, weights_only=True)
    odd = [*ODD_VALUES, torch.zeros(3), torch.zeros(2, 2, dtype=torch.long)]
    for i in range(TRIES):
        path = tmp_path / f"{i}.pt"
        if i % 2:
            path.write_bytes(corrupt_bytes(data, rng))
        else:
            torch.save(corrupt_structure(document, rng, odd), path)
        seen.add(outcome(load_model, path))
    assert seen == {"ok", "refused"}
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")  # truncated to nothing: torch raises a bare EOFError(), with no message
    with pytest.raises(SatError, match=r"cannot read the model file .*empty.pt: EOFError"):
        load_model(empty)


def test_checkpoints(tmp_path):
    rng, seen = random.Random(4), set()
    model = small_model()
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.zeros(2, 4, 6), torch.zeros(2, 3, dtype=torch.long)).logits.sum().backward()
    optimizer.step()
    fp = {"settings": {"batch_size": 2}, "seed": 1}
    good = tmp_path / "good.pt"
    checkpoint.save(good, fp, model, optimizer, checkpoint.Progress(epoch=1, step=3), World())
    data = good.read_bytes()
    document = torch.load(good, weights_only=True)
    for i in range(TRIES // 2):
        path = tmp_path / f"{i}.pt"
        if i % 2:
            path.write_bytes(corrupt_bytes(data, rng))
        else:
            torch.save(corrupt_structure(document, rng), path)
        fresh = small_model()
        seen.add(outcome(checkpoint.load, path, fp, fresh, torch.optim.Adam(fresh.parameters())))
    assert "refused" in seen
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")  # truncated to nothing
    with pytest.raises(SatError, match=r"cannot read the checkpoint .*empty.pt \(EOFError\); delete it"):
        checkpoint.load(empty, fp, model, optimizer)


def test_training_settings():
    rng, seen = random.Random(5), set()
    base = config.train_settings(*_paper_datasets(), "flickr8k", "soft")
    for _ in range(TRIES):
        seen.add(outcome(Settings.from_config, corrupt_structure(base, rng)))
    assert seen == {"ok", "refused"}


def test_config_files(tmp_path):
    rng, seen = random.Random(6), set()
    base, _ = _paper_datasets()
    for _ in range(TRIES // 2):
        seen.add(outcome(config.check, corrupt_structure(base, rng), SCHEMA))
    assert seen == {"ok", "refused"}


ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def _paper_datasets() -> tuple[dict, dict]:
    base = config.load_yaml(ROOT / "config.yaml")
    return base, config.check(copy.deepcopy(base), SCHEMA)


@pytest.fixture(autouse=True)
def _nothing_half_written(tmp_path):
    """No reader leaves a partial file beside the ones it was given."""
    yield
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]  # atomic_output's temporaries
    assert not leftovers
