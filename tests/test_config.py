"""config.yaml is checked against workflow/schemas/config.schema.yaml, naming every bad key."""

import copy

import pytest
import yaml
from conftest import REPO

from show_attend_tell.config import check, load_yaml, merge, train_settings
from show_attend_tell.errors import SatError
from show_attend_tell.settings import Settings

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture
def config():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_the_shipped_config_is_valid_and_resolves_presets(config):
    datasets = check(config, SCHEMA)
    assert set(datasets) == {"demo", "flickr8k", "flickr30k", "coco"}
    assert datasets["demo"]["source"] == "demo"
    assert datasets["flickr8k"]["vocab_size"] == 2500 and datasets["coco"]["vocab_size"] == 10000
    assert datasets["flickr8k"]["train"]["optimizer"] == "adam"  # the CPU preset's (the paper's preset: rmsprop)
    assert datasets["flickr8k"]["features"]["encoder"] == "efficientnet_lite2+efficientnet_lite0+efficientnet_lite1"
    assert datasets["flickr8k"]["train"]["batch_size"] == 64
    assert datasets["coco"]["train"]["optimizer"] == "adam"
    assert datasets["flickr30k"]["train"]["optimizer"] == "adam"
    # a dataset's partial override of a nested section keeps the other defaults
    assert datasets["demo"]["features"]["encoder"] == "efficientnet_lite0"
    assert datasets["demo"]["features"]["image_size"] == 224


def test_a_model_entry_overrides_the_dataset_preset_which_overrides_the_defaults(config):
    datasets = check(config, SCHEMA)
    soft, hard = (train_settings(config, datasets, "demo", m) for m in ("soft", "hard"))
    assert soft["attention"] == "soft" and hard["attention"] == "hard"
    assert soft["learning_rate"] == hard["learning_rate"] == 0.001  # the demo's, not the defaults' 0.0004
    assert soft["alpha_c"] == 0.1 and hard["alpha_c"] == 0.0  # the demo's, then the hard model's own
    assert train_settings(config, datasets, "coco", "soft")["hidden_dim"] == 1800
    Settings.from_config(soft)  # every resolved key is a training setting


def test_the_papers_preset_is_one_configfile_away(config):
    paper = merge(config, load_yaml(REPO / "workflow" / "presets" / "paper_vgg19.yaml"))
    datasets = check(paper, SCHEMA)
    soft = train_settings(paper, datasets, "flickr8k", "soft")
    assert (
        datasets["flickr8k"]["features"]["encoder"] == "vgg19"
        and datasets["flickr8k"]["features"]["layer"] == "conv5_4"
    )
    assert (soft["optimizer"], soft["hidden_dim"], soft["embed_dim"]) == ("rmsprop", 1800, 512)
    assert datasets["flickr8k"]["vocab_size"] == 10000


@pytest.mark.parametrize(
    "edit, key, complaint",
    [
        (lambda c: c["defaults"]["features"].update(batch_size=0), "defaults.features.batch_size", "minimum"),
        (lambda c: c["datasets"]["flickr8k"].update(vocab_sise=5), "datasets.flickr8k", "vocab_sise"),
        (lambda c: c.update(device="tpu"), "device", "'tpu' is not one of"),
        (
            lambda c: c["archives"]["caption_datasets.zip"].update(md5="xyz"),
            "archives.caption_datasets.zip.md5",
            "does not match",
        ),
        (
            lambda c: c["datasets"]["coco"].update(train={"optimizer": "sgd"}),
            "datasets.coco.train.optimizer",
            "is not one of",
        ),
        (lambda c: c["demo"].pop("test"), "demo", "'test' is a required property"),
        (lambda c: c.update(train_threads=0), "train_threads", "minimum"),
        (lambda c: c.update(train_threads="many"), "train_threads", "does not match '^auto$'"),
        (
            lambda c: c["datasets"]["flickr8k"]["features"].update(encoder="efficientnet_lite2+alexnet"),
            "datasets.flickr8k.features.encoder",
            "does not match",
        ),
    ],
)
def test_an_invalid_value_is_reported_with_its_key(config, edit, key, complaint):
    edit(config)
    with pytest.raises(SatError) as error:
        check(config, SCHEMA)
    line = next(line for line in str(error.value).splitlines() if line.strip().startswith(key + ":"))
    assert complaint in line


def test_all_errors_are_reported_at_once(config):
    config["seed"] = -1
    config["threads"] = "two"
    with pytest.raises(SatError) as error:
        check(config, SCHEMA)
    assert "  seed:" in str(error.value) and "  threads:" in str(error.value)


def test_run_must_name_configured_datasets(config):
    config["run"] = ["flickr9k"]
    with pytest.raises(SatError, match="unknown dataset 'flickr9k'"):
        check(config, SCHEMA)


def test_a_dataset_needs_its_captions_and_images(config):
    broken = copy.deepcopy(config)
    del broken["datasets"]["flickr8k"]["images"]
    with pytest.raises(SatError, match=r"datasets.flickr8k.images: give `dirs`"):
        check(broken, SCHEMA)
    config["datasets"]["coco"]["images"]["archives"] = ["train2017.zip"]
    with pytest.raises(SatError, match="'train2017.zip' is not listed under `archives`"):
        check(config, SCHEMA)


def test_local_files_and_folders_replace_archives(config):
    config["datasets"]["flickr30k"] = {
        "captions": {"file": "/data/dataset_flickr30k.json"},
        "images": {"dirs": ["/data/flickr30k-images"]},
    }
    assert check(config, SCHEMA)["flickr30k"]["images"]["dirs"] == ["/data/flickr30k-images"]


def test_nested_command_line_values_are_read_as_the_schema_types_them(config):
    """snakemake --config 'datasets={coco: {features: {shards: 8}}}' leaves nested values as strings."""
    config["datasets"]["coco"]["features"] = {"shards": "8"}
    config["defaults"]["train"].update(dropout="0.3", clip_norm="null", val_images="~")
    datasets = check(config, SCHEMA)
    assert datasets["coco"]["features"]["shards"] == 8
    coco = datasets["coco"]["train"]
    assert coco["dropout"] == 0.3 and coco["clip_norm"] is None and coco["val_images"] is None
    assert config["datasets"]["coco"]["features"]["shards"] == 8  # the rules read config itself


def test_a_string_that_is_not_of_the_wanted_type_is_still_named(config):
    config["datasets"]["coco"]["features"] = {"shards": "eight"}
    with pytest.raises(SatError, match="datasets.coco.features.shards: 'eight' is not of type 'integer'"):
        check(config, SCHEMA)


@pytest.mark.parametrize(
    "value, shown", [(float("nan"), "nan"), (float("inf"), "inf"), (".nan", "nan"), ("-.inf", "-inf")]
)
def test_nan_and_infinity_are_refused_though_the_schemas_ranges_let_them_pass(config, value, shown):
    config["defaults"]["train"]["dropout"] = value  # a float, or a --config string that YAML reads as one
    with pytest.raises(SatError) as error:
        check(config, SCHEMA)
    assert f"  defaults.train.dropout: {shown} is not a finite number" in str(error.value).splitlines()


def test_nan_in_settings_given_by_hand_is_the_same_one_line(config):
    import json

    settings = train_settings(config, check(config, SCHEMA), "flickr8k", "soft") | json.loads('{"dropout": NaN}')
    with pytest.raises(SatError, match=r"^invalid training settings .*dropout: nan is not a finite number$"):
        Settings.from_config(settings)
