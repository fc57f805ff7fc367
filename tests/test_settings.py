"""Each setting is defined once, in the schema (its type, range, default and help); the rest follows it.

config.yaml's `defaults`, the `sat` options and the dataclasses either take their defaults from the schema
or are checked against it here, so a setting added in one place and not the other fails a test.
"""

from dataclasses import MISSING, asdict, fields

import pytest
import yaml
from conftest import REPO

from show_attend_tell.cli import parser
from show_attend_tell.config import SECTIONS, check, check_section, load_schema, schema_defaults, train_settings
from show_attend_tell.model import ModelConfig
from show_attend_tell.settings import Settings

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
# The schema's `$defs` that hold settings: a dataset's own keys, and its sections.
SETTING_DEFS = ("dataset_settings", *SECTIONS)

# Each `sat` command with options that set settings: the other arguments it needs, and the schema's section.
COMMANDS = {
    "prepare": (["dataset.json", "captions.csv", "images.csv", "--image-dirs", "images"], "dataset_settings"),
    "vocab": (["captions.csv", "vocab.csv"], "dataset_settings"),
    "encode": (["captions.csv", "vocab.csv", "captions.h5"], "dataset_settings"),
    "features": (["images.csv", "features.h5"], "features"),
    "decode": (["model.pt", "features.h5", "images.csv", "captions.json", "attention.h5"], "decode"),
    "caption": (["model.pt", "photo.jpg"], "decode"),
}
# Options named like a setting that keep a default of their own (cli_arguments says why beside each).
OWN_DEFAULTS = {("features", "layer"), ("caption", "batch_size")}


def settings_of(section: str) -> dict[str, dict]:
    """The settings of a `$defs` entry: its properties, less nested sections and the dataset's sources."""
    properties = load_schema()["$defs"][section]["properties"]
    return {key: spec for key, spec in properties.items() if "$ref" not in spec and spec.get("type") != "object"}


@pytest.fixture
def config():
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.mark.parametrize("section", SETTING_DEFS)
def test_every_setting_has_a_valid_default_and_a_description(section):
    assert all("default" in spec and spec.get("description") for spec in settings_of(section).values())
    check_section(schema_defaults(section), section, "schema defaults")


def test_the_settings_dataclass_has_a_field_for_each_training_setting_and_the_schemas_defaults():
    assert [f.name for f in fields(Settings)] == list(settings_of("train"))
    assert all(f.default is MISSING for f in fields(Settings))  # none of its own: the schema's
    assert asdict(Settings.from_config({})) == schema_defaults("train")


def test_the_model_configs_defaults_are_the_schemas():
    defaults = schema_defaults("train")
    own = {f.name: f.default for f in fields(ModelConfig) if f.default is not MISSING}
    assert own and own == {key: defaults[key] for key in own}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_sat_option_named_like_a_setting_has_the_schemas_default(command):
    arguments, section = COMMANDS[command]
    parsed = vars(parser().parse_args([command, *arguments]))
    defaults = schema_defaults(section)
    named = {key for key in parsed if key in defaults} - {key for c, key in OWN_DEFAULTS if c == command}
    assert named and {key: parsed[key] for key in named} == {key: defaults[key] for key in named}


@pytest.mark.parametrize(
    "command, option, complaint",
    [
        ("features", "--image-size=16", "image_size: 16 is less than the minimum of 32"),
        ("decode", "--length-penalty=-1", "length_penalty: -1.0 is less than the minimum of 0"),
        ("encode", "--max-length=0", "max_length: 0 is less than the minimum of 1"),
        ("prepare", "--tokenizer=spacy", "invalid choice: 'spacy'"),
    ],
)
def test_a_sat_option_out_of_the_schemas_range_is_refused_naming_the_setting(command, option, complaint, capsys):
    with pytest.raises(SystemExit):
        parser().parse_args([command, *COMMANDS[command][0], option])
    assert complaint in capsys.readouterr().err


def test_config_yaml_lists_the_schemas_defaults(config):
    listed = config["defaults"]
    for section, values in (("dataset_settings", listed), *((s, listed[s]) for s in SECTIONS)):
        defaults = schema_defaults(section)
        shown = {key: value for key, value in values.items() if key in defaults}
        assert shown == {key: defaults[key] for key in shown}, section


def test_a_setting_left_out_of_defaults_takes_the_schemas_default(config):
    for section, key in (("train", "patience"), ("features", "shards")):
        del config["defaults"][section][key]
    del config["defaults"]["decode"], config["defaults"]["vocab_size"]
    datasets = check(config, SCHEMA)
    assert train_settings(config, datasets, "coco", "soft")["patience"] == schema_defaults("train")["patience"]
    assert datasets["flickr8k"]["train"]["patience"] == 3  # a dataset's own value still wins
    assert all(ds["features"]["shards"] == schema_defaults("features")["shards"] for ds in datasets.values())
    assert datasets["coco"]["decode"] == schema_defaults("decode")
    assert (datasets["coco"]["vocab_size"], datasets["flickr8k"]["vocab_size"]) == (10000, 2500)


def test_a_commands_help_prints_its_description_as_written(capsys):
    # argparse %-formats help strings, not descriptions: one text serves both, so "%%" must not reach the screen.
    with pytest.raises(SystemExit):
        parser().parse_args(["compare", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "paired bootstrap 95% interval" in out and "%%" not in out
