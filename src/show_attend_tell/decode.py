"""Caption generation from a trained captioner, a whole batch of images at once.

Decoding always uses the expected context (hard attention models too): the deterministic
counterpart of the sampled location, which the hard model also sees during training (the paper's
0.5-probability trick). ``<pad>``, ``<start>`` and ``<unk>`` are never emitted: a caption that says
"a <unk> on the grass" would score on words it does not contain.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from .atomic import atomic_output
from .data import Features, check_features
from .devices import resolve_device
from .errors import SatError
from .images import read_images_csv
from .model import Captioner, load_model
from .progress import progress_bar
from .text import END, PAD, START, UNK

log = logging.getLogger(__name__)


@dataclass
class Decoded:
    """Per image: word ids (without <start>/<end>), their attention, and the caption's log-probability."""

    tokens: list[list[int]]
    alphas: list[np.ndarray]  # (rows, L): one row per emitted word, plus one for <end> when the caption ended
    scores: list[float]  # log p(caption), summed over its words and <end>
    finished: list[bool]  # False where no hypothesis reached <end> within max_length


def banned_ids(vocab: list[str]) -> list[int]:
    return [vocab.index(w) for w in (PAD, START, UNK)]


@torch.no_grad()
def beam_search(
    model: Captioner,
    features: torch.Tensor,
    vocab: list[str],
    *,
    beam_size: int = 3,
    max_length: int = 30,
    length_penalty: float = 0.0,
    no_repeat_ngram: int = 0,
) -> Decoded:
    """The best caption of each of the (B, L, D) ``features`` by beam search over all B x K beams at once.

    Each time step is one forward step of the decoder for all images still decoding. Of an image's K x V
    continuations the K best are kept; those among them that emit <end> are set aside as finished (the
    best per image, ranked by log p / (words + 1) ** ``length_penalty``) and K live beams continue. An
    image is done when none of its live beams can beat its best finished hypothesis any more; one with
    no finished hypothesis after ``max_length`` words returns its best unfinished one. ``beam_size=1`` is
    greedy decoding. With ``no_repeat_ngram`` = n > 0 no hypothesis says the same n words twice: a word that
    would complete an n-gram already in it is never chosen ("a boy on a skateboard on a skateboard").
    """
    if max_length < 1 or beam_size < 1 or no_repeat_ngram < 0:
        raise ValueError(
            f"max_length and beam_size must be at least 1 and no_repeat_ngram at least 0, not {max_length}, "
            f"{beam_size} and {no_repeat_ngram}"
        )
    batch, k, device = features.shape[0], beam_size, features.device
    start, end = vocab.index(START), vocab.index(END)
    banned = torch.tensor(banned_ids(vocab), device=device)
    ctx = model.context(features)  # shared by an image's K beams, not copied
    h, c = (s.unsqueeze(1).expand(-1, k, -1).contiguous() for s in model.initial_state(ctx))
    scores = torch.full((batch, k), -torch.inf, device=device)
    scores[:, 0] = 0.0  # one live beam per image until the first expansion
    words = torch.full((batch, k), start, dtype=torch.long, device=device)
    history = words.new_empty(batch, k, 0)  # the live beams' words so far
    # Per image, whether decoding or done: the best finished hypothesis and the live beams' last scores.
    best = torch.full((batch,), -torch.inf, device=device)  # after the length penalty
    best_raw = torch.zeros(batch, device=device)
    best_step = torch.full((batch,), -1, dtype=torch.long, device=device)
    best_beam = torch.zeros(batch, dtype=torch.long, device=device)
    live = scores.clone()
    active = torch.arange(batch, device=device)  # images still decoding: rows of the tensors above
    origins, emitted, alphas = [], [], []
    for t in range(max_length + 1):
        n = len(active)
        embedded = model.embed(words)
        step = model.step(ctx, h, c, model.gates_y(embedded))
        logp = torch.log_softmax(model.logits(embedded, step.h, step.z).float(), dim=-1)
        logp[..., banned] = -torch.inf
        if no_repeat_ngram:
            _ban_repeats(logp, history, no_repeat_ngram)
        candidates = scores.unsqueeze(-1) + logp  # (n, K, V)
        alphas.append(_scatter(step.alpha, active, batch))
        # The t-word hypotheses that stop here, if <end> ranks among the image's K best continuations.
        threshold = candidates.view(n, -1).topk(k, dim=1).values[:, -1:]
        ending = candidates[:, :, end].masked_fill(candidates[:, :, end] < threshold, -torch.inf)
        ranked, beam = (ending / (t + 1) ** length_penalty).max(1)
        better = ranked > best[active]
        improved = active[better]
        best[improved] = ranked[better]
        best_raw[improved] = ending[better, beam[better]]
        best_step[improved] = t
        best_beam[improved] = beam[better]
        if t == max_length:
            break
        candidates[:, :, end] = -torch.inf
        scores, index = candidates.view(n, -1).topk(k, dim=1)
        origin, word = index // candidates.shape[-1], index % candidates.shape[-1]
        history = torch.cat([history.gather(1, origin.unsqueeze(-1).expand(-1, -1, t)), word.unsqueeze(-1)], -1)
        origins.append(_scatter(origin, active, batch))
        emitted.append(_scatter(word, active, batch))
        live[active] = scores
        # Log-probabilities only fall as words are added, so a live beam's best possible finish is its score now,
        # divided by the longest length allowed. Images that cannot improve leave the batch.
        keep = best[active] < scores[:, 0] / (max_length + 1) ** length_penalty
        if not keep.any():
            break
        images = torch.arange(n, device=device)[keep].unsqueeze(1)
        h, c = step.h[images, origin[keep]], step.c[images, origin[keep]]
        words, scores, history = word[keep], scores[keep], history[keep]
        if not keep.all():
            ctx = ctx.rows(keep)
            active = active[keep]
    return _backtrack(origins, emitted, alphas, live, best_raw, best_step, best_beam)


def _ban_repeats(logp: torch.Tensor, history: torch.Tensor, n: int) -> None:
    """Set to -inf in ``logp`` (rows, K, V) each word that would repeat an n-gram of ``history`` (rows, K, t)."""
    t = history.shape[-1]
    if t < n:
        return
    grams = history.unfold(-1, n, 1)  # (rows, K, t - n + 1, n): every n-gram said so far
    said = (grams[..., :-1] == history[..., t - n + 1 :].unsqueeze(-2)).all(-1)  # its first n - 1 words end history
    rows, beams, at = said.nonzero(as_tuple=True)
    logp[rows, beams, grams[rows, beams, at, -1]] = -torch.inf


def _scatter(values: torch.Tensor, active: torch.Tensor, batch: int) -> torch.Tensor:
    """``values`` of the active images placed in a tensor of the whole batch (zeros elsewhere)."""
    full = values.new_zeros((batch, *values.shape[1:]))
    full[active] = values
    return full


def _backtrack(
    origins: list[torch.Tensor],
    emitted: list[torch.Tensor],
    alphas: list[torch.Tensor],
    scores: torch.Tensor,
    best_raw: torch.Tensor,
    best_step: torch.Tensor,
    best_beam: torch.Tensor,
) -> Decoded:
    """Each image's chosen hypothesis, read back through the beams' origins."""
    origin, words = torch.stack(origins, 1).cpu().numpy(), torch.stack(emitted, 1).cpu().numpy()
    att = torch.stack(alphas, 1).float().cpu().numpy()  # (B, steps, K, L)
    steps, beams = best_step.cpu().numpy(), best_beam.cpu().numpy()
    live_beam = scores.argmax(1).cpu().numpy()
    out = Decoded([], [], [], [])
    for b in range(len(steps)):
        finished = steps[b] >= 0
        t, beam = (int(steps[b]), int(beams[b])) if finished else (origin.shape[1], int(live_beam[b]))
        tokens, rows = [], [att[b, t, beam]] if finished else []
        for s in range(t - 1, -1, -1):
            tokens.append(int(words[b, s, beam]))
            beam = int(origin[b, s, beam])
            rows.append(att[b, s, beam])
        out.tokens.append(tokens[::-1])
        out.alphas.append(np.stack(rows[::-1]))
        out.scores.append(float(best_raw[b]) if finished else float(scores[b].max()))
        out.finished.append(bool(finished))
    return out


def caption_split(
    model_pt: str | Path,
    features_h5: str | Path,
    images_csv: str | Path,
    split: str,
    results_json: str | Path,
    attention_h5: str | Path,
    *,
    beam_size: int = 3,
    max_length: int = 30,
    length_penalty: float = 0.0,
    no_repeat_ngram: int = 0,
    batch_size: int = 100,
    device: str = "auto",
    threads: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """Caption every ``split`` image: COCO results JSON ``[{"image_id", "caption"}]`` and attention HDF5."""
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    model, document = load_model(model_pt, dev)
    store = Features(features_h5)
    check_features(document, store)
    rows = [r for r in read_images_csv(images_csv) if r["split"] == split]
    if not rows:
        raise SatError(f"{images_csv} has no {split} images")
    vocab = document["vocab"]
    decoded = Decoded([], [], [], [])
    with progress_bar(total=len(rows), desc=f"decoding {split}", unit="img", enabled=progress) as bar:
        for start in range(0, len(rows), batch_size):
            index = np.array([int(r["image_index"]) for r in rows[start : start + batch_size]])
            part = beam_search(
                model,
                store[index].to(dev).float(),
                vocab,
                beam_size=beam_size,
                max_length=max_length,
                length_penalty=length_penalty,
                no_repeat_ngram=no_repeat_ngram,
            )
            for field in ("tokens", "alphas", "scores", "finished"):
                getattr(decoded, field).extend(getattr(part, field))
            bar.update(len(index))
    results = [
        {"image_id": int(r["image_id"]), "caption": " ".join(vocab[w] for w in ws)}
        for r, ws in zip(rows, decoded.tokens)
    ]
    with atomic_output(results_json) as tmp:
        tmp.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    settings = {
        "beam_size": beam_size,
        "max_length": max_length,
        "length_penalty": length_penalty,
        "no_repeat_ngram": no_repeat_ngram,
        "split": split,
        "model": str(model_pt),
        "attention": document["config"]["attention"],
        "vocab_size": len(vocab),
        "grid": list(store.attrs["grid"]),
        "encoder": store.attrs["encoder"],
        "layer": store.attrs["layer"],
        "image_size": store.attrs["image_size"],
    }
    _write_attention(attention_h5, rows, results, decoded, settings)
    unfinished = decoded.finished.count(False)
    log.info(
        "captioned %d %s images (beam %d)%s",
        len(rows),
        split,
        beam_size,
        f"; {unfinished} reached {max_length} words without <end>" if unfinished else "",
    )
    return results


def _write_attention(path: str | Path, rows: list[dict], results: list[dict], decoded: Decoded, settings: dict) -> None:
    """Per image: its caption's words and their (steps, L) attention, padded; attributes say how it was decoded."""
    steps = max(len(a) for a in decoded.alphas)
    locations = decoded.alphas[0].shape[1]
    alphas = np.zeros((len(rows), steps, locations), dtype=np.float16)
    tokens = np.full((len(rows), steps), -1, dtype=np.int32)
    for i, (a, ws) in enumerate(zip(decoded.alphas, decoded.tokens)):
        alphas[i, : len(a)] = a
        tokens[i, : len(ws)] = ws
    strings = h5py.string_dtype("utf-8")
    with atomic_output(path) as tmp, h5py.File(tmp, "w", track_order=True) as f:
        f.create_dataset("alphas", data=alphas, chunks=(1, steps, locations), track_times=False)
        f.create_dataset("tokens", data=tokens, track_times=False)
        f.create_dataset("n_words", data=np.array([len(t) for t in decoded.tokens], dtype=np.int32), track_times=False)
        f.create_dataset("log_probability", data=np.array(decoded.scores, dtype=np.float32), track_times=False)
        f.create_dataset("finished", data=np.array(decoded.finished), track_times=False)
        f.create_dataset(
            "image_ids", data=np.array([r["image_id"] for r in results], dtype=np.int64), track_times=False
        )
        f.create_dataset(
            "image_index", data=np.array([int(r["image_index"]) for r in rows], dtype=np.int64), track_times=False
        )
        f.create_dataset("files", data=[r["file"] for r in rows], dtype=strings, track_times=False)
        f.create_dataset("captions", data=[r["caption"] for r in results], dtype=strings, track_times=False)
        f.attrs["description"] = (
            "row i: image image_ids[i] (images.csv row image_index[i]); tokens[i, :n_words[i]] are its caption's "
            "word ids (vocab.csv), alphas[i, t] the attention over the grid's L cells (row-major) when word t was "
            "emitted, and alphas[i, n_words[i]] when <end> was (if finished[i])"
        )
        f.attrs.update(settings)
