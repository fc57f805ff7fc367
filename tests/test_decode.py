"""Beam search: exact on small cases, greedy at beam 1, the same batched as one image at a time, no crash,
and, asked to, no n-gram said twice."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from show_attend_tell.decode import beam_search
from show_attend_tell.model import Captioner, ModelConfig
from show_attend_tell.text import END, SPECIALS, START

WORDS = ["circle", "red", "a", "square", "blue", "is"]
VOCAB = list(SPECIALS) + WORDS
L, D = 5, 4


def make(seed=0, vocab=VOCAB) -> Captioner:
    torch.manual_seed(seed)
    model = Captioner(ModelConfig(len(vocab), L, D, embed_dim=6, hidden_dim=10, attention_dim=7, dropout=0.0))
    with torch.no_grad():
        model.out.weight.mul_(8.0)  # peaked word distributions: captions that end
    return model.eval()


def features(n, seed=1):
    return torch.randn(n, L, D, generator=torch.Generator().manual_seed(seed))


def greedy_reference(model, feats, max_length):
    """Step by step: the most probable allowed word, until <end>."""
    banned = [VOCAB.index(w) for w in ("<pad>", START, "<unk>")]
    ctx = model.context(feats)
    h, c = model.initial_state(ctx)
    word, out = torch.tensor([VOCAB.index(START)]), []
    for t in range(max_length + 1):
        embedded = model.embed(word)
        step = model.step(ctx, h, c, model.gates_y(embedded))
        h, c = step.h, step.c
        logits = model.logits(embedded, h, step.z)
        logits[:, banned] = -torch.inf
        word = logits.argmax(-1)
        if word.item() == VOCAB.index(END) or t == max_length:
            break
        out.append(word.item())
    return out


def log_probability(model, feats, words, vocab=VOCAB):
    """log p(words, <end> | image) by teacher forcing, under the model's whole distribution."""
    tokens = torch.tensor([[vocab.index(START), *words, vocab.index(END)]])
    logits = model(feats, tokens[:, :-1]).logits
    return torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:, None]).sum().item()


def test_beam_one_is_greedy_decoding():
    model, feats = make(), features(8)
    decoded = beam_search(model, feats, VOCAB, beam_size=1, max_length=12)
    assert decoded.tokens == [greedy_reference(model, feats[i : i + 1], 12) for i in range(8)]


def repeats(words: list[int], n: int) -> bool:
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(grams) != len(set(grams))


@pytest.mark.parametrize("no_repeat_ngram", [0, 1, 2])
def test_a_wide_beam_finds_the_most_probable_caption_of_all(no_repeat_ngram):
    """Of all captions (with no n-gram twice, if asked): the most probable one, and its log-probability."""
    vocab = list(SPECIALS) + ["circle", "red"]
    model, feats = make(seed=3, vocab=vocab), features(3, seed=4)
    max_length = 3
    decoded = beam_search(  # beam_size >= 3 ** max_length
        model, feats, vocab, beam_size=27, max_length=max_length, no_repeat_ngram=no_repeat_ngram
    )
    for i in range(3):
        candidates = [list(c) for n in range(max_length + 1) for c in itertools.product([4, 5], repeat=n)]
        if no_repeat_ngram:
            candidates = [c for c in candidates if not repeats(c, no_repeat_ngram)]
        scores = [log_probability(model, feats[i : i + 1], c, vocab) for c in candidates]
        assert decoded.tokens[i] == candidates[int(np.argmax(scores))]
        assert decoded.scores[i] == pytest.approx(max(scores), abs=1e-4)


@pytest.mark.parametrize("length_penalty,no_repeat_ngram", [(0.0, 0), (0.7, 0), (0.7, 2)])
def test_batched_search_returns_what_each_image_alone_returns(length_penalty, no_repeat_ngram):
    model, feats = make(), features(12)
    settings = {"beam_size": 3, "max_length": 15, "length_penalty": length_penalty, "no_repeat_ngram": no_repeat_ngram}
    batched = beam_search(model, feats, VOCAB, **settings)
    for i in range(12):
        alone = beam_search(model, feats[i : i + 1], VOCAB, **settings)
        assert batched.tokens[i] == alone.tokens[0]
        assert batched.scores[i] == pytest.approx(alone.scores[0], abs=1e-5)
        np.testing.assert_allclose(batched.alphas[i], alone.alphas[0], atol=1e-6)


def test_scores_are_the_captions_log_probabilities_and_alphas_one_row_per_word_and_end():
    model, feats = make(), features(5)
    decoded = beam_search(model, feats, VOCAB, beam_size=3, max_length=15)
    for i in range(5):
        assert decoded.finished[i]
        assert decoded.scores[i] == pytest.approx(log_probability(model, feats[i : i + 1], decoded.tokens[i]), abs=1e-4)
        assert decoded.alphas[i].shape == (len(decoded.tokens[i]) + 1, L)
        np.testing.assert_allclose(decoded.alphas[i].sum(1), 1.0, rtol=1e-5)


def test_beam_search_never_does_worse_than_greedy():
    model, feats = make(seed=5), features(10, seed=6)
    greedy = beam_search(model, feats, VOCAB, beam_size=1, max_length=10)
    beam = beam_search(model, feats, VOCAB, beam_size=4, max_length=10)
    assert all(b >= g - 1e-5 for b, g in zip(beam.scores, greedy.scores))


def test_when_no_beam_ends_in_time_the_best_unfinished_caption_is_returned():
    model, feats = make(), features(4)
    with torch.no_grad():
        model.out.bias[VOCAB.index(END)] = -1e4
    decoded = beam_search(model, feats, VOCAB, beam_size=3, max_length=6)
    assert decoded.finished == [False] * 4
    assert all(len(t) == 6 for t in decoded.tokens)
    assert all(a.shape == (6, L) for a in decoded.alphas)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_with_no_repeat_ngram_no_caption_says_the_same_n_words_twice(n):
    model, feats = make(), features(6)
    with torch.no_grad():
        model.out.bias[VOCAB.index(END)] = -1e4  # no caption ends before max_length: repeats are likely
    plain = beam_search(model, feats, VOCAB, beam_size=3, max_length=len(WORDS))
    assert any(repeats(t, n) for t in plain.tokens)  # without the ban, captions repeat themselves
    decoded = beam_search(model, feats, VOCAB, beam_size=3, max_length=len(WORDS), no_repeat_ngram=n)
    assert not any(repeats(t, n) for t in decoded.tokens)
    for i, (tokens, finished) in enumerate(zip(decoded.tokens, decoded.finished)):  # scores: the captions' log p
        teacher = torch.tensor([[VOCAB.index(START), *tokens, *[VOCAB.index(END)] * finished]])
        logp = torch.log_softmax(model(feats[i : i + 1], teacher[:, :-1]).logits, -1)
        assert decoded.scores[i] == pytest.approx(logp.gather(-1, teacher[:, 1:, None]).sum().item(), rel=1e-5)


def test_special_tokens_are_never_emitted():
    model, feats = make(), features(6)
    with torch.no_grad():
        model.out.bias[[VOCAB.index("<unk>"), VOCAB.index("<pad>")]] = 50.0
    decoded = beam_search(model, feats, VOCAB, beam_size=2, max_length=8)
    assert not any(w in (0, 1, 3) for t in decoded.tokens for w in t)
