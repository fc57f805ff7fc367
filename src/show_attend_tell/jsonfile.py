"""Reading a JSON file that a user supplied, with one clear message for a missing or broken file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import SatError


def read_json(path: str | Path, what: str) -> Any:
    """The parsed contents of ``path``; ``what`` names the file in the message if it is missing."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise SatError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SatError(f"{path} is not valid JSON: {e}") from None
    except RecursionError:  # the parser recurses once per level of nesting
        raise SatError(f"{path} is not valid JSON: nested too deeply") from None
