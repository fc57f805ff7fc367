"""The demo set's captions: five distinct sentences per image, each true of its scene.

A caption names one object, relates two (the relation read off their drawn boxes) or lists them
all; every noun phrase picks out exactly one object of the image, so captions can be checked.
"""

from __future__ import annotations

import numpy as np

from .demo_scene import relation

CAPTIONS_PER_IMAGE = 5
MIN_WORDS, MAX_WORDS = 4, 20

_REL_WORDS = {
    "left": (("left", "of"), ("to", "the", "left", "of")),
    "right": (("right", "of"), ("to", "the", "right", "of")),
    "above": (("above",),),
    "below": (("below",), ("under",)),
}
_COUNT_WORDS = ("zero", "one", "two", "three")


def captions(rng: np.random.Generator, objects: list[dict]) -> list[str]:
    """``CAPTIONS_PER_IMAGE`` distinct true captions, raw text as in Flickr8k ("A red circle ... .")."""
    if len(objects) == 1:
        makers, weights = (_single, _listing), (0.6, 0.4)
    else:
        makers, weights = (_pair, _listing, _single), (0.5, 0.3, 0.2)
    cumulative = np.cumsum(weights)
    written: list[str] = []
    for _ in range(1000):
        make = makers[int(np.searchsorted(cumulative, rng.uniform(0, cumulative[-1]), side="right"))]
        words = make(rng, objects)
        n_words = sum(w not in (",", ":") for w in words)
        if not MIN_WORDS <= n_words <= MAX_WORDS:
            continue
        text = " ".join(words)
        raw = text[0].upper() + text[1:] + " ."
        if raw not in written:
            written.append(raw)
            if len(written) == CAPTIONS_PER_IMAGE:
                return written
    raise RuntimeError(f"could not write {CAPTIONS_PER_IMAGE} distinct captions for {objects}")  # pragma: no cover


def _choice(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _article(det: str, words: list[str]) -> list[str]:
    if det == "a" and words and words[0][0] in "aeiou":
        det = "an"
    return [det, *words]


def _phrase(rng: np.random.Generator, obj: dict, objects: list[dict]) -> list[str]:
    """Words naming ``obj`` (shape plus some attributes), always unique among ``objects``."""
    kept = _choice(
        rng, (("size", "colour"), ("size", "colour"), ("size", "colour"), ("colour",), ("colour",), ("size",), ())
    )
    matches = [o for o in objects if o["shape"] == obj["shape"] and all(o[k] == obj[k] for k in kept)]
    if len(matches) > 1:
        kept = ("size", "colour")
    return [obj[k] for k in ("size", "colour") if k in kept] + [obj["shape"]]


def _single(rng: np.random.Generator, objects: list[dict]) -> list[str]:
    """A caption about one object."""
    obj = _choice(rng, objects)
    np_ = _article(_choice(rng, ("a", "a", "one")), _phrase(rng, obj, objects))
    form = int(rng.integers(4))
    if form == 0:
        return ["there", "is", *np_]
    if form == 1:
        return [
            *_choice(
                rng,
                (
                    ["a", "picture", "of"],
                    ["an", "image", "of"],
                    ["an", "image", "with"],
                    ["this", "image", "shows"],
                    ["this", "picture", "shows"],
                ),
            ),
            *np_,
        ]
    if form == 2:
        return [*np_, "in", "this", _choice(rng, ("image", "picture"))]
    return ["there", "is", *np_, "in", "the", _choice(rng, ("image", "picture"))]


def _pair(rng: np.random.Generator, objects: list[dict]) -> list[str]:
    """A caption relating two objects, the relation read off their boxes."""
    i, j = (int(k) for k in rng.permutation(len(objects))[:2])
    a, b = objects[i], objects[j]
    rel = list(_choice(rng, _REL_WORDS[relation(a["bbox"], b["bbox"])]))
    pa, pb = _phrase(rng, a, objects), _phrase(rng, b, objects)
    form = int(rng.integers(4))
    if form == 0:
        return [*_article("a", pa), *rel, *_article("a", pb)]
    if form == 1:
        return ["the", *pa, "is", *rel, "the", *pb]
    if form == 2:
        return ["there", "is", *_article("a", pa), *rel, *_article("a", pb)]
    return [*_article("a", pa), "is", *rel, *_article("a", pb)]


def _listing(rng: np.random.Generator, objects: list[dict]) -> list[str]:
    """A caption naming every object, in a random order."""
    n = len(objects)
    phrases = [
        _article(_choice(rng, ("a", "a", "one")), _phrase(rng, objects[int(k)], objects)) for k in rng.permutation(n)
    ]
    listed = list(phrases[0])
    for k, p in enumerate(phrases[1:], start=1):
        listed += ["and" if k == n - 1 else ",", *p]
    count = [_COUNT_WORDS[n], "shape" if n == 1 else "shapes"]
    form = int(rng.integers(4 if n > 1 else 3))
    if form == 0:
        return [*count, ":", *listed]
    if form == 1:
        return ["there", "is" if n == 1 else "are", *count, ":", *listed]
    if form == 2:
        return [*_choice(rng, (["a", "picture", "of"], ["an", "image", "with"])), *listed]
    return listed
