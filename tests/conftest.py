"""Shared test fixtures and paths."""

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

REPO = TESTS.parent
# Real Flickr8k photos and captions in the real archive layout; present in CI, absent in a user's clone.
FLICKR8K_SAMPLE = REPO.parent / "shared" / "data" / "flickr8k_sample"
from http_server import range_server_factory  # noqa: F401,E402


@pytest.fixture(scope="session")
def decompression_bomb(tmp_path_factory) -> Path:
    """A valid 14000 x 14000 PNG of 24 KB: over twice Pillow's MAX_IMAGE_PIXELS, which it refuses to decode."""
    from PIL import Image

    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (14000, 14000)).save(path)  # 1 bit per pixel: quick to write, 196 Mpx when decoded
    assert 14000 * 14000 > 2 * Image.MAX_IMAGE_PIXELS
    return path


@pytest.fixture(autouse=True)
def _own_precision_verdicts(tmp_path_factory, monkeypatch):
    """Precision probes remember their verdicts under XDG_CACHE_HOME: the tests' own, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Stages set torch's thread count process-wide; a test must not change another's numerics."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def stages(tmp_path_factory):
    """The real data stages on a tiny demo set: 30 train, 6 val, 6 test images at 64 px (a 4x4 grid)."""
    from show_attend_tell import demo_stages

    return demo_stages.build(tmp_path_factory.mktemp("stages"), 30, 6, 6, image_size=96, encoder_size=64, seed=3)
