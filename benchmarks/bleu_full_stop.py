"""How much keeping the final full stop moves the paper's BLEU: human captions scored against the others.

For every image of a split, its first human caption is the hypothesis and the other captions are the
references (a model-free stand-in for a good captioner). BLEU without the brevity penalty, as the
paper reports it, is computed three ways:

- PTB: coco-caption's tokenizer, punctuation dropped (our `paper_bleu_n`);
- punctuation kept: lower-cased whitespace tokens of the raw captions (Flickr8k's raw text is tokenised);
- PTB + final '.': our `full_stop_bleu_n` (a '.' on the hypothesis and on each reference ending in one).

    .venv/bin/python benchmarks/bleu_full_stop.py path/to/dataset_flickr8k.json --split test
"""

from __future__ import annotations

import argparse
import json

from show_attend_tell.metrics import (
    bleu_statistics,
    java_on_path,
    paper_bleu,
    ptb_tokenize,
    with_full_stops,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("karpathy_json")
    p.add_argument("--split", default="test")
    args = p.parse_args()
    with open(args.karpathy_json, encoding="utf-8") as f:
        images = [im for im in json.load(f)["images"] if im["split"] == args.split]
    raw_refs = {i: [s["raw"] for s in im["sentences"][1:]] for i, im in enumerate(images)}
    raw_hyps = {i: im["sentences"][0]["raw"] for i, im in enumerate(images)}
    with java_on_path():
        refs, hyps = ptb_tokenize(raw_refs, raw_hyps)

    def kept(caption: str) -> str:
        return " ".join(caption.lower().split())

    variants = {
        "PTB (punctuation dropped)": (refs, hyps),
        "punctuation kept": (
            {i: [kept(c) for c in cs] for i, cs in raw_refs.items()},
            {i: kept(c) for i, c in raw_hyps.items()},
        ),
        "PTB + final '.'": with_full_stops(raw_refs, refs, hyps),
    }
    ending = sum(c.rstrip().endswith(".") for cs in raw_refs.values() for c in cs) / sum(map(len, raw_refs.values()))
    print(f"{len(images)} {args.split} images; {100 * ending:.0f}% of reference captions end in '.'")
    print(f"{'tokenisation':28} BLEU-1 BLEU-2 BLEU-3 BLEU-4  (x100, without brevity penalty)")
    for name, (r, h) in variants.items():
        print(f"{name:28} " + " ".join(f"{100 * b:6.1f}" for b in paper_bleu(bleu_statistics(r, h))))


if __name__ == "__main__":
    main()
