"""The ``sat`` sub-commands' interfaces: positional files, options and help, in the order ``--help`` lists them.

Kept apart from what the commands run (``cli_commands``), so each command's interface reads in one place.
An option that sets a workflow setting takes its default, type or choices and help from the schema
(``add_setting``), so ``sat`` run by hand does what the workflow's defaults do.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from .cli_commands import (
    run_caption,
    run_compare,
    run_decode,
    run_demo,
    run_encode,
    run_evaluate,
    run_features,
    run_fetch,
    run_figures,
    run_grounding,
    run_lengths,
    run_merge_features,
    run_prepare,
    run_table1,
    run_train,
    run_unpack,
    run_vocab,
)
from .config import schema_setting, section_problems

GPUS_HELP = "GPUs the job was given by its scheduler (the rule's gpu resource): fewer visible is an error"


def _shard(value: str) -> tuple[int, int]:
    """``K/N``: the K-th (from 0) of N shards."""
    try:
        k, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N, e.g. 0/4, not {value!r}") from None
    return k, n


def _is_null(value: str) -> bool:
    return value.lower() in ("none", "null", "")


def _optional_str(value: str) -> str | None:
    return None if _is_null(value) else value


_PARSERS: dict[str, Callable[[str], Any]] = {"integer": int, "number": float, "string": str}


def _setting_type(section: str, key: str) -> Callable[[str], Any]:
    """The argparse ``type`` of a setting: its schema type (null read as None where allowed) and range.

    So a value out of range stops ``sat`` as it stops the workflow, naming the setting.
    """
    types = schema_setting(section, key)["type"]
    types = [types] if isinstance(types, str) else types
    parse = _PARSERS[next(t for t in types if t != "null")]

    def setting(text: str) -> Any:
        value = None if "null" in types and _is_null(text) else parse(text)
        problems = section_problems({key: value}, section)
        if problems:
            raise argparse.ArgumentTypeError("; ".join(problems))
        return value

    setting.__name__ = parse.__name__  # argparse names it in "invalid int value: 'x'"
    return setting


def add_setting(
    parser: argparse.ArgumentParser, section: str, key: str, flag: str | None = None, **overrides: Any
) -> None:
    """Option ``--key`` (or ``flag``) for setting ``key`` of the schema's ``section``.

    Its default, choices (an enum) or type and range, and help (the description's first sentence) are the schema's;
    ``overrides`` (other add_argument keywords) are for an option that must differ, with the reason beside it.
    """
    spec = schema_setting(section, key)
    first_sentence = re.split(r"(?<=\.)\s+(?=[A-Z])", spec["description"].strip(), maxsplit=1)[0]
    kind = {"choices": spec["enum"]} if "enum" in spec else {"type": _setting_type(section, key)}
    options = {"default": spec["default"], "help": first_sentence.replace("%", "%%") + " (default: %(default)s)"}
    parser.add_argument(flag or "--" + key.replace("_", "-"), dest=key, **options | kind | overrides)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add every sub-command, each with its arguments and the handler it runs, to ``sat``'s sub-parsers."""

    def command(usage: str, func: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        """A subcommand from ``usage``: its name, then its positional file arguments in order (as ``--help`` shows)."""
        name, *paths = usage.split()
        # argparse %-formats a help string but prints a description as it is: "%%" there would show twice.
        s = sub.add_parser(name, help=help, description=help.replace("%%", "%"))
        s.set_defaults(func=func)
        for path in paths:
            s.add_argument(path)
        return s

    s = command("demo out", run_demo, "generate the offline demo dataset (images, Karpathy JSON, object boxes)")
    s.add_argument("--train", type=int, required=True)
    s.add_argument("--val", type=int, required=True)
    s.add_argument("--test", type=int, required=True)
    s.add_argument("--image-size", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)

    s = command("fetch", run_fetch, "download (resumably) or link an archive, verifying its md5")
    s.add_argument("source", type=_optional_str, help="http(s):// or file:// URL, or a local path")
    s.add_argument("dest")
    s.add_argument("--md5", type=_optional_str, default=None)
    s.add_argument("--retries", type=int, default=5)

    s = command("extract archive dest", run_unpack, "extract a zip or tar archive into a folder, atomically")

    s = command(
        "prepare captions_json captions_csv images_csv",
        run_prepare,
        "captions JSON + images -> captions.csv and images.csv",
    )
    s.add_argument("--image-dirs", nargs="+", required=True)
    for key in ("tokenizer", "restval", "bad_images"):
        add_setting(s, "dataset_settings", key)
    s.add_argument("--threads", type=int, default=2)

    s = command(
        "vocab captions_csv vocab_csv", run_vocab, "captions.csv -> vocab.csv (most frequent train words + specials)"
    )
    add_setting(s, "dataset_settings", "vocab_size", "--size")

    s = command(
        "encode captions_csv vocab_csv captions_h5", run_encode, "captions.csv + vocab.csv -> captions.h5 (token ids)"
    )
    add_setting(s, "dataset_settings", "max_length")

    s = command(
        "lengths captions_h5 lengths_json",
        run_lengths,
        "captions.h5 -> lengths.json (train caption length -> caption indices)",
    )

    s = command("features images_csv out", run_features, "images.csv -> CNN annotation vectors in HDF5")
    add_setting(s, "features", "encoder")
    # Not the schema's blocks.6: that is the default encoder's layer, and `--encoder vgg19` alone must work.
    add_setting(s, "features", "layer", default=None)
    for key in ("image_size", "batch_size", "workers", "precision"):
        add_setting(s, "features", key)
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--device", default="auto")
    s.add_argument(
        "--random-weights", dest="pretrained", action="store_false", help="random encoder weights (tests only)"
    )
    s.add_argument("--gpus", type=int, default=0, help=GPUS_HELP)
    s.add_argument(
        "--shard",
        type=_shard,
        default=None,
        metavar="K/N",
        help="encode only the K-th of N equal ranges of images (separate jobs; then merge-features)",
    )

    s = command(
        "merge-features images_csv out", run_merge_features, "merge complete feature shards into one features file"
    )
    s.add_argument("shards", nargs="+")

    s = command(
        "train captions_h5 vocab_csv captions_csv lengths_json features_h5",
        run_train,
        "train a soft or hard attention captioner; resumes from its checkpoint",
    )
    s.add_argument("--settings", required=True, help="training settings as a JSON object (config key `train`)")
    s.add_argument("--model", required=True, help="output: the selected model (.pt)")
    s.add_argument("--log-csv", required=True, help="output: one row per epoch")
    s.add_argument("--curves", required=True, help="output: learning curves (.png)")
    s.add_argument("--checkpoint", required=True, help="where to keep the resumable state (not an output)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=None, help="CPU threads, shared among the processes")
    s.add_argument("--device", default="auto")
    s.add_argument("--gpus", type=int, default=0, help=GPUS_HELP)
    s.add_argument(
        "--processes",
        type=int,
        default=1,
        help="data-parallel training processes (one per GPU; gloo on the CPU): >1 relaunches under torchrun",
    )

    s = command(
        "decode model features_h5 images_csv results_json attention_h5",
        run_decode,
        "caption a split's images by batched beam search: COCO results JSON + attention",
    )
    s.add_argument("--split", default="test")
    for key in ("beam_size", "max_length", "length_penalty", "no_repeat_ngram", "batch_size"):
        add_setting(s, "decode", key)
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--device", default="auto")

    s = command(
        "evaluate results_json captions_csv metrics_csv",
        run_evaluate,
        "score a COCO results JSON: BLEU-1..4, METEOR, ROUGE-L, CIDEr, paper BLEU",
    )
    s.add_argument("--split", default="test")

    s = command(
        "compare captions_csv results_a results_b",
        run_compare,
        "two models' captions of one split: BLEU-4, METEOR, CIDEr, b - a and its paired bootstrap 95%% interval",
    )
    s.add_argument("--split", default="test")
    s.add_argument("--out", help="also write the table to this CSV")
    s.add_argument("--draws", type=int, default=10000, help="bootstrap redraws of the images")
    s.add_argument("--seed", type=int, default=0, help="seed of the redraws")

    s = command(
        "figures attention_h5 images_csv out_dir",
        run_figures,
        "attention figures (one panel per word) of a decoded split's first images",
    )
    s.add_argument("--count", type=int, default=4)

    s = command(
        "grounding attention_h5 objects_json out_csv",
        run_grounding,
        "demo set: naming accuracy and pointing game from the object boxes",
    )

    s = command("table1 out_csv out_md", run_table1, "the paper's Table 1 beside ours, as CSV and Markdown (printed)")
    s.add_argument(
        "--row",
        nargs=6,
        action="append",
        required=True,
        metavar=("DATASET", "MODEL", "METRICS_CSV", "ATTENTION_H5", "TRAIN_LOG_CSV", "GROUNDING_CSV"),
        help="one per row; GROUNDING_CSV is - where there is none",
    )

    s = command("caption", run_caption, "caption your own image files or folders with a trained model.pt")
    s.add_argument("model", help="a model.pt written by the train stage")
    s.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    s.add_argument("--figures", help="folder to write each image's attention figure to")
    for key in ("beam_size", "max_length", "length_penalty", "no_repeat_ngram"):
        add_setting(s, "decode", key)
    # Not decode's batch_size: these are images read and run through the CNN too, not stored features.
    s.add_argument("--batch-size", type=int, default=16, help="images read, encoded and captioned at once")
    s.add_argument("--device", default="auto")
