"""What each ``sat`` sub-command runs: a thin wrapper handing its parsed arguments to a package function.

Each imports its stage only when called, so building the parser (``sat --help``) loads neither
torch nor pandas; ``cli_arguments`` binds each wrapper to its sub-command.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from .errors import SatError


def run_demo(a: argparse.Namespace) -> None:
    from .demo import generate

    generate(a.out, a.train, a.val, a.test, image_size=a.image_size, seed=a.seed, progress=a.progress)


def run_fetch(a: argparse.Namespace) -> None:
    from .download import fetch

    fetch(a.source, a.dest, a.md5, retries=a.retries, progress=a.progress)


def run_unpack(a: argparse.Namespace) -> None:
    from .unpack import unpack

    unpack(a.archive, a.dest, progress=a.progress)


def run_prepare(a: argparse.Namespace) -> None:
    from .prepare import prepare

    prepare(
        a.captions_json,
        a.image_dirs,
        a.captions_csv,
        a.images_csv,
        **_options(a, "tokenizer restval bad_images threads progress"),
    )


def run_vocab(a: argparse.Namespace) -> None:
    from .text import build_vocab

    build_vocab(a.captions_csv, a.vocab_csv, a.vocab_size)


def run_encode(a: argparse.Namespace) -> None:
    from .text import encode

    encode(a.captions_csv, a.vocab_csv, a.captions_h5, a.max_length)


def run_lengths(a: argparse.Namespace) -> None:
    from .text import length_dictionary

    length_dictionary(a.captions_h5, a.lengths_json)


def run_features(a: argparse.Namespace) -> None:
    from .features import extract

    options = _options(
        a, "encoder layer image_size batch_size workers precision threads device pretrained progress shard"
    )
    extract(a.images_csv, a.out, **options, declared_gpus=a.gpus)


def run_merge_features(a: argparse.Namespace) -> None:
    from .features import merge_shards

    merge_shards(a.images_csv, a.shards, a.out)


def run_train(a: argparse.Namespace) -> None:
    from .distributed import exec_torchrun, launched_by_torchrun
    from .settings import Settings
    from .train import train

    if a.processes > 1 and not launched_by_torchrun():
        exec_torchrun(a.processes, a.argv, a.threads)
    train(
        a.captions_h5,
        a.vocab_csv,
        a.captions_csv,
        a.lengths_json,
        a.features_h5,
        settings=Settings.from_config(_json_argument(a.settings, "--settings")),
        model_out=a.model,
        log_csv=a.log_csv,
        curves_png=a.curves,
        checkpoint=a.checkpoint,
        declared_gpus=a.gpus,
        **_options(a, "seed device threads progress"),
    )


def run_decode(a: argparse.Namespace) -> None:
    from .decode import caption_split

    caption_split(
        a.model,
        a.features_h5,
        a.images_csv,
        a.split,
        a.results_json,
        a.attention_h5,
        **_options(a, "beam_size max_length length_penalty no_repeat_ngram batch_size device threads progress"),
    )


def run_evaluate(a: argparse.Namespace) -> None:
    from .metrics import evaluate

    evaluate(a.results_json, a.captions_csv, a.split, a.metrics_csv)


def run_compare(a: argparse.Namespace) -> None:
    from .paired import compare

    table = compare(a.captions_csv, a.results_a, a.results_b, a.split, a.out, a.draws, a.seed)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))


def run_figures(a: argparse.Namespace) -> None:
    from .figures import split_figures

    split_figures(a.attention_h5, a.images_csv, a.out_dir, a.count)


def run_grounding(a: argparse.Namespace) -> None:
    from .grounding import score_split

    score_split(a.attention_h5, a.objects_json, a.out_csv)


def run_table1(a: argparse.Namespace) -> None:
    from .report import markdown, row, table1

    rows = [
        row(ds, model, metrics, attention, train_log, None if grounding == "-" else grounding)
        for ds, model, metrics, attention, train_log, grounding in a.row
    ]
    print(markdown(table1(rows, a.out_csv, a.out_md)))


def run_caption(a: argparse.Namespace) -> int:
    from .caption import caption_images, format_results

    options = _options(a, "beam_size max_length length_penalty no_repeat_ngram batch_size device")
    results = caption_images(a.model, a.inputs, figures_dir=a.figures, **options)
    print(format_results(results))
    return 2 if any(r.error for r in results) else 0


def _options(a: argparse.Namespace, names: str) -> dict[str, Any]:
    """The parsed options ``names`` (space-separated) as keywords of the same names.

    A stage's keywords are named as its options, so a wrapper names each once instead of writing ``name=a.name``.
    """
    return {name: getattr(a, name) for name in names.split()}


def _json_argument(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SatError(f"{option} is not valid JSON ({e}): {text!r:.200}") from e
