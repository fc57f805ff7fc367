"""Shared test fixtures and paths."""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

REPO = TESTS.parent
# Real Flickr8k photos and captions in the real archive layout; present in CI, absent in a user's clone.
FLICKR8K_SAMPLE = REPO.parent / "shared" / "data" / "flickr8k_sample"
from http_server import range_server_factory  # noqa: F401,E402
