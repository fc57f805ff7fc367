"""``sat``: the command line the workflow's rules call, one sub-command per stage.

Each sub-command is a thin wrapper over a package function, so every stage can also be run (and
debugged) by hand outside Snakemake. A user-facing problem ends with one ``error:`` line, exit code 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import SatError


def _demo(a: argparse.Namespace) -> None:
    from .demo import generate

    generate(a.out, a.train, a.val, a.test, image_size=a.image_size, seed=a.seed, progress=a.progress)


def _fetch(a: argparse.Namespace) -> None:
    from .download import fetch

    fetch(a.source, a.dest, a.md5, retries=a.retries, progress=a.progress)


def _extract(a: argparse.Namespace) -> None:
    from .download import unpack

    unpack(a.archive, a.dest, progress=a.progress)


def _prepare(a: argparse.Namespace) -> None:
    from .prepare import prepare

    prepare(
        a.captions_json,
        a.image_dirs,
        a.captions_csv,
        a.images_csv,
        tokenizer=a.tokenizer,
        restval=a.restval,
        bad_images=a.bad_images,
        threads=a.threads,
        progress=a.progress,
    )


def _vocab(a: argparse.Namespace) -> None:
    from .text import build_vocab

    build_vocab(a.captions_csv, a.vocab_csv, a.size)


def _encode(a: argparse.Namespace) -> None:
    from .text import encode

    encode(a.captions_csv, a.vocab_csv, a.captions_h5, a.max_length)


def _lengths(a: argparse.Namespace) -> None:
    from .text import length_dictionary

    length_dictionary(a.captions_h5, a.lengths_json)


def _features(a: argparse.Namespace) -> None:
    from .features import extract

    extract(
        a.images_csv,
        a.out,
        encoder=a.encoder,
        layer=a.layer,
        image_size=a.image_size,
        batch_size=a.batch_size,
        workers=a.workers,
        threads=a.threads,
        device=a.device,
        pretrained=a.pretrained,
        progress=a.progress,
        shard=a.shard,
        declared_gpus=a.gpus,
    )


def _merge_features(a: argparse.Namespace) -> None:
    from .features import merge_shards

    merge_shards(a.images_csv, a.shards, a.out)


GPUS_HELP = "GPUs the job was given by its scheduler (the rule's gpu resource): fewer visible is an error"


def _shard(value: str) -> tuple[int, int]:
    """``K/N``: the K-th (from 0) of N shards."""
    try:
        k, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N, e.g. 0/4, not {value!r}") from None
    return k, n


def _train(a: argparse.Namespace) -> None:
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
        model_out=a.model,
        log_csv=a.log_csv,
        curves_png=a.curves,
        checkpoint=a.checkpoint,
        settings=Settings.from_config(_json_argument(a.settings, "--settings")),
        seed=a.seed,
        device=a.device,
        declared_gpus=a.gpus,
        threads=a.threads,
        progress=a.progress,
    )


def _json_argument(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SatError(f"{option} is not valid JSON ({e}): {text!r:.200}") from e


def _decode(a: argparse.Namespace) -> None:
    from .decode import caption_split

    caption_split(
        a.model,
        a.features_h5,
        a.images_csv,
        a.split,
        a.results_json,
        a.attention_h5,
        beam_size=a.beam_size,
        max_length=a.max_length,
        length_penalty=a.length_penalty,
        batch_size=a.batch_size,
        device=a.device,
        threads=a.threads,
        progress=a.progress,
    )


def _evaluate(a: argparse.Namespace) -> None:
    from .metrics import evaluate

    evaluate(a.results_json, a.captions_csv, a.split, a.metrics_csv)


def _figures(a: argparse.Namespace) -> None:
    from .figures import split_figures

    split_figures(a.attention_h5, a.images_csv, a.out_dir, a.count)


def _grounding(a: argparse.Namespace) -> None:
    from .grounding import score_split

    score_split(a.attention_h5, a.objects_json, a.out_csv)


def _table1(a: argparse.Namespace) -> None:
    from .report import markdown, row, table1

    rows = [
        row(ds, model, metrics, attention, train_log, None if grounding == "-" else grounding)
        for ds, model, metrics, attention, train_log, grounding in a.row
    ]
    print(markdown(table1(rows, a.out_csv, a.out_md)))


def _caption(a: argparse.Namespace) -> int:
    from .caption import caption_images, format_results

    results = caption_images(
        a.model,
        a.inputs,
        beam_size=a.beam_size,
        max_length=a.max_length,
        figures_dir=a.figures,
        batch_size=a.batch_size,
        device=a.device,
    )
    print(format_results(results))
    return 2 if any(r.error for r in results) else 0


def _optional_int(value: str) -> int | None:
    return None if value.lower() in ("none", "null", "") else int(value)


def _optional_str(value: str) -> str | None:
    return None if value.lower() in ("none", "null", "") else value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sat", description=__doc__.splitlines()[0])
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, func: Callable[[argparse.Namespace], None], help: str, *paths: str
    ) -> argparse.ArgumentParser:
        """A subcommand; ``paths`` are its positional file arguments, in order."""
        s = sub.add_parser(name, help=help, description=help)
        s.set_defaults(func=func)
        for path in paths:
            s.add_argument(path)
        return s

    s = command("demo", _demo, "generate the offline demo dataset (images, Karpathy JSON, object boxes)", "out")
    s.add_argument("--train", type=int, required=True)
    s.add_argument("--val", type=int, required=True)
    s.add_argument("--test", type=int, required=True)
    s.add_argument("--image-size", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)

    s = command("fetch", _fetch, "download (resumably) or link an archive, verifying its md5")
    s.add_argument("source", type=_optional_str, help="http(s):// or file:// URL, or a local path")
    s.add_argument("dest")
    s.add_argument("--md5", type=_optional_str, default=None)
    s.add_argument("--retries", type=int, default=5)

    s = command("extract", _extract, "extract a zip or tar archive into a folder, atomically", "archive", "dest")

    s = command(
        "prepare",
        _prepare,
        "captions JSON + images -> captions.csv and images.csv",
        "captions_json",
        "captions_csv",
        "images_csv",
    )
    s.add_argument("--image-dirs", nargs="+", required=True)
    s.add_argument("--tokenizer", default="words")
    s.add_argument("--restval", default="train", choices=["train", "drop"])
    s.add_argument("--bad-images", default="error", choices=["error", "skip"])
    s.add_argument("--threads", type=int, default=2)

    s = command(
        "vocab", _vocab, "captions.csv -> vocab.csv (most frequent train words + specials)", "captions_csv", "vocab_csv"
    )
    s.add_argument("--size", type=int, default=10000)

    s = command(
        "encode",
        _encode,
        "captions.csv + vocab.csv -> captions.h5 (token ids)",
        "captions_csv",
        "vocab_csv",
        "captions_h5",
    )
    s.add_argument("--max-length", type=_optional_int, default=None)

    s = command(
        "lengths",
        _lengths,
        "captions.h5 -> lengths.json (train caption length -> caption indices)",
        "captions_h5",
        "lengths_json",
    )

    s = command("features", _features, "images.csv -> CNN annotation vectors in HDF5", "images_csv", "out")
    s.add_argument("--encoder", required=True)
    s.add_argument("--layer", type=_optional_str, default=None)
    s.add_argument("--image-size", type=int, default=224)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--workers", type=int, default=1)
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
        "merge-features", _merge_features, "merge complete feature shards into one features file", "images_csv", "out"
    )
    s.add_argument("shards", nargs="+")

    s = command(
        "train",
        _train,
        "train a soft or hard attention captioner; resumes from its checkpoint",
        "captions_h5",
        "vocab_csv",
        "captions_csv",
        "lengths_json",
        "features_h5",
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
        "decode",
        _decode,
        "caption a split's images by batched beam search: COCO results JSON + attention",
        "model",
        "features_h5",
        "images_csv",
        "results_json",
        "attention_h5",
    )
    s.add_argument("--split", default="test")
    s.add_argument("--beam-size", type=int, default=3)
    s.add_argument("--max-length", type=int, default=30)
    s.add_argument("--length-penalty", type=float, default=0.0)
    s.add_argument("--batch-size", type=int, default=100)
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--device", default="auto")

    s = command(
        "evaluate",
        _evaluate,
        "score a COCO results JSON: BLEU-1..4, METEOR, ROUGE-L, CIDEr, paper BLEU",
        "results_json",
        "captions_csv",
        "metrics_csv",
    )
    s.add_argument("--split", default="test")

    s = command(
        "figures",
        _figures,
        "attention figures (one panel per word) of a decoded split's first images",
        "attention_h5",
        "images_csv",
        "out_dir",
    )
    s.add_argument("--count", type=int, default=4)

    s = command(
        "grounding",
        _grounding,
        "demo set: naming accuracy and pointing game from the object boxes",
        "attention_h5",
        "objects_json",
        "out_csv",
    )

    s = command(
        "table1", _table1, "the paper's Table 1 beside ours, as CSV and Markdown (printed)", "out_csv", "out_md"
    )
    s.add_argument(
        "--row",
        nargs=6,
        action="append",
        required=True,
        metavar=("DATASET", "MODEL", "METRICS_CSV", "ATTENTION_H5", "TRAIN_LOG_CSV", "GROUNDING_CSV"),
        help="one per row; GROUNDING_CSV is - where there is none",
    )

    s = command("caption", _caption, "caption your own image files or folders with a trained model.pt")
    s.add_argument("model", help="a model.pt written by the train stage")
    s.add_argument("inputs", nargs="+", help="image files and/or folders of images")
    s.add_argument("--figures", help="folder to write each image's attention figure to")
    s.add_argument("--beam-size", type=int, default=3)
    s.add_argument("--max-length", type=int, default=30)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--device", default="auto")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.func(args) or 0
    except (SatError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        # The OS errors: an input named on the command line that is missing or cannot be opened.
        message = e if isinstance(e, SatError) else f"{e.filename}: {e.strerror}"
        rank = os.environ.get("RANK", "0")  # under torchrun every process reports; say which
        print(f"error{'' if rank == '0' else f' (process {rank})'}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
