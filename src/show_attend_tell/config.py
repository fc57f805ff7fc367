"""Check the workflow configuration against its JSON schema and resolve per-dataset settings.

The Snakefile calls :func:`check` before any rule is defined, so a typo or an out-of-range value
stops the run at once with a message naming the key, instead of failing hours later in a job.
"""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path
from typing import Any

import yaml

from .errors import SatError


def load_yaml(path: str | Path) -> Any:
    """The file's YAML, read by libyaml where installed: 10x faster, and every `sat` command reads the schema."""
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _key(path: Any) -> str:
    """``datasets.flickr8k.features.batch_size`` from a jsonschema error path."""
    return ".".join(str(p) for p in path) or "(top level)"


# The one definition of every setting: type, range, default and meaning. The workflow checks its config
# with it and fills in the defaults it leaves out; the `sat` options and the settings dataclass follow it.
# It ships inside the package; workflow/schemas/ links to it.
SCHEMA = Path(__file__).resolve().parent / "config.schema.yaml"
# The nested sections of a dataset's settings, each a `$defs` entry of its own.
SECTIONS = ("features", "train", "decode")


@functools.cache
def load_schema() -> dict:
    """The package's schema, read once per process (every `sat` option takes its default from it)."""
    try:
        return load_yaml(SCHEMA)
    except OSError as e:
        raise SatError(f"cannot read the settings schema {SCHEMA}: {e}") from e


def schema_setting(section: str, key: str) -> dict:
    """The schema of setting ``key`` of ``section``: features, train, decode or dataset_settings (`$defs`)."""
    return load_schema()["$defs"][section]["properties"][key]


def schema_defaults(section: str, schema: dict | None = None) -> dict[str, Any]:
    """Every setting of ``section`` that has a default, with it: what a config or a command may leave out."""
    properties = (schema or load_schema())["$defs"][section]["properties"]
    return {key: copy.deepcopy(spec["default"]) for key, spec in properties.items() if "default" in spec}


def with_defaults(defaults: dict, schema: dict) -> dict:
    """The config's ``defaults`` with each setting it leaves out taken from the schema.

    So a new setting needs no edit of config.yaml, and no rule meets a missing key.
    """
    filled = schema_defaults("dataset_settings", schema) | defaults
    for section in SECTIONS:
        if isinstance(filled.get(section, {}), dict):  # anything else is left for validation to name
            filled[section] = schema_defaults(section, schema) | filled.get(section, {})
    return filled


def _problems(values: Any, schema: dict) -> list[str]:
    """``key: message`` for every invalid key of ``values`` (the most specific error per key)."""
    import jsonschema  # here, not at the top: `sat --help` and the options' defaults need only the YAML

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(values), key=lambda e: list(map(str, e.absolute_path)))
    problems = []
    for error in errors:
        best = jsonschema.exceptions.best_match([error])
        problems.append(f"{_key(best.absolute_path)}: {best.message}")
    return problems + _non_finite(values)


def _non_finite(value: Any, path: tuple = ()) -> list[str]:
    """``key: nan is not a finite number`` for each NaN or infinity below ``value``: JSON and YAML read them,
    and they pass the schema, whose range checks are false comparisons for NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{_key(path)}: {value} is not a finite number"]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [problem for key, item in items for problem in _non_finite(item, (*path, key))]


def validate(config: dict, schema: dict) -> None:
    """Raise SatError naming every invalid key of ``config``."""
    problems = _problems(config, schema)
    if problems:
        raise SatError(
            "invalid configuration (see workflow/schemas/config.schema.yaml):\n" + "\n".join(f"  {p}" for p in problems)
        )


def section_problems(values: Any, section: str) -> list[str]:
    """``key: message`` for every invalid key of ``values`` against the schema's definition ``section``."""
    schema = load_schema()
    return _problems(values, {"$defs": schema["$defs"], **schema["$defs"][section]})


def check_section(values: Any, section: str, what: str) -> None:
    """Check ``values`` against the schema's definition ``section`` (e.g. train): one line naming each bad key."""
    problems = section_problems(values, section)
    if problems:
        raise SatError(f"invalid {what} (see {SCHEMA.name}, {section}): " + "; ".join(problems))


def merge(base: dict, override: dict) -> dict:
    """``base`` updated recursively by ``override`` (nested dicts merge, other values replace)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def datasets(config: dict) -> dict[str, dict]:
    """Each dataset's settings with ``defaults`` filled in, checked for consistency across keys."""
    resolved = {}
    for name, spec in config["datasets"].items():
        ds = merge(config["defaults"], spec)
        if ds["source"] == "karpathy":
            _check_sources(config, name, ds)
        resolved[name] = ds
    for name in config["run"]:
        if name not in resolved:
            raise SatError(f"run: unknown dataset {name!r}; configured datasets: {', '.join(resolved)}")
    return resolved


def _check_sources(config: dict, name: str, ds: dict) -> None:
    """A Karpathy dataset needs its captions JSON and its images, each from an archive or a local path."""
    captions, images = ds.get("captions", {}), ds.get("images", {})
    key = f"datasets.{name}"
    if not ("file" in captions or {"archive", "member"} <= captions.keys()):
        raise SatError(f"{key}.captions: give `file` (a Karpathy JSON) or `archive` and `member`")
    if not (images.get("dirs") or images.get("archives")):
        raise SatError(f"{key}.images: give `dirs` (folders holding the images) or `archives`")
    needed = [] if "file" in captions else [captions["archive"]]
    needed += [] if images.get("dirs") else images["archives"]
    for archive in needed:
        if archive not in config["archives"]:
            raise SatError(f"{key}: archive {archive!r} is not listed under `archives`")


ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip")


def stem(archive: str) -> str:
    """Folder name an archive is extracted to: its file name without the archive suffix."""
    for suffix in ARCHIVE_SUFFIXES:
        if archive.endswith(suffix):
            return archive[: -len(suffix)]
    return archive


def sources(ds: dict, data_dir: str) -> dict[str, Any]:
    """Where a dataset's captions and images come from, resolved once for the rules.

    ``captions_source`` / ``image_sources``: what the prepare stage depends on (the generated demo folder,
    extracted archive folders, or the user's own files and folders); ``captions_json`` / ``image_dirs``:
    the Karpathy JSON itself and the folders searched for each image.
    """

    def extracted(archive: str) -> str:
        return f"{data_dir}/extracted/{stem(archive)}"

    if ds["source"] == "demo":
        demo = f"{data_dir}/demo"
        return {
            "captions_source": demo,
            "captions_json": f"{demo}/dataset_demo.json",
            "image_dirs": [demo],
            "image_sources": [demo],
        }
    captions, images = ds["captions"], ds["images"]
    if "file" in captions:
        captions_source = captions_json = captions["file"]
    else:
        captions_source = extracted(captions["archive"])
        captions_json = f"{captions_source}/{captions['member']}"
    if images.get("dirs"):
        image_dirs = image_sources = list(images["dirs"])
    else:
        image_sources = [extracted(a) for a in images["archives"]]
        folder = images.get("folder", "")
        image_dirs = [f"{d}/{folder}" if folder else d for d in image_sources]
    return {
        "captions_source": captions_source,
        "captions_json": captions_json,
        "image_dirs": image_dirs,
        "image_sources": image_sources,
    }


def train_settings(config: dict, datasets: dict[str, dict], dataset: str, model: str) -> dict:
    """The training settings of ``model`` on ``dataset``: the dataset's `train` keys, then the model's own."""
    return merge(datasets[dataset]["train"], config["models"][model])


def coerce(value: Any, schema: dict, root: dict) -> Any:
    """``value`` with strings turned into the numbers, booleans or nulls that ``schema`` asks for.

    Snakemake's ``--config key=value`` parses only the top level: in ``datasets={coco: {features:
    {shards: 8}}}`` the 8 stays the string "8". Only a string that reads exactly as the wanted type is
    changed; anything else is left for validation to name.
    """
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    if isinstance(value, dict):
        extra = schema.get("additionalProperties")
        return {
            k: coerce(v, schema.get("properties", {}).get(k) or (extra if isinstance(extra, dict) else {}), root)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [coerce(v, schema.get("items", {}), root) for v in value]
    if isinstance(value, str):
        types = schema.get("type", [])
        types = [types] if isinstance(types, str) else types
        parsed = yaml.safe_load(value) if value.strip() else value
        wanted = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None)}
        for name in types:
            if name in wanted and isinstance(parsed, wanted[name]) and not (name != "boolean" and parsed is True):
                return parsed
    return value


def check(config: dict, schema_path: str | Path) -> dict[str, dict]:
    """Coerce, complete and validate ``config`` (in place: the rules read it); the resolved per-dataset settings."""
    schema = load_yaml(schema_path)
    config.update(coerce(config, schema, schema))
    if isinstance(config.get("defaults"), dict):
        config["defaults"] = with_defaults(config["defaults"], schema)
    validate(config, schema)
    return datasets(config)
