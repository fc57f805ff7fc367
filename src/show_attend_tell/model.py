"""The attention captioner of Show, Attend and Tell (Xu et al., 2015, sections 3-4), soft or hard.

One decoder step (eq. 1-7): from h_{t-1} the attention MLP scores every annotation vector a_i
(e_ti = w . tanh(W_a a_i + U_a h_{t-1})), alpha_t = softmax(e_t); the context is either the expectation
sum_i alpha_ti a_i (soft) or one sampled a_{s_t}, s_t ~ Multinoulli(alpha_t) (hard), scaled by the scalar
gate beta_t = sigmoid(f_beta(h_{t-1})); an LSTM reads [E y_{t-1}; h_{t-1}; z_t]; the deep output layer
gives p(y_t) ~ exp(L_o tanh(E y_{t-1} + L_h h_t + L_z z_t)) (the tanh is the authors' code's; the
paper's eq. 7 writes the sum without it, which would make the deep output a plain low-rank linear map).

Speed comes from doing per step only what depends on h_{t-1}: W_a a_i is projected once per batch,
the word embeddings' share of the LSTM gates for all steps in one matrix product, the three
projections of h_{t-1} (attention, gates, gate beta) in one product, and the deep output layer over
all steps after the loop, in one product over the vocabulary. In training, the weight gradients of the
two layers applied at every step (that projection of h_{t-1}, and z_t's share of the gates) are one
product over all steps each (``step_linear``), not one small product per step, and the attention's
passes over its B x L x A values run a block of images at a time (``location_scores``).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from .atomic import atomic_output, save_torch
from .errors import SatError, first_line
from .location_scores import LocationScores
from .step_linear import StepLinear
from .text import SPECIALS

ATTENTIONS = ("soft", "hard")
EXPECTED = -1  # the location "picked" by a row that uses the expected context
MODEL_FORMAT = "show_attend_tell captioner v1"


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the shapes of a captioner's parameters."""

    vocab_size: int
    num_locations: int  # L: annotation vectors per image
    feature_dim: int  # D: size of each
    attention: str = "soft"
    embed_dim: int = 512  # m
    hidden_dim: int = 1800  # n
    attention_dim: int = 512
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if self.attention not in ATTENTIONS:
            raise SatError(f"unknown attention {self.attention!r}; choose one of {ATTENTIONS}")

    def to_dict(self) -> dict:
        return asdict(self)


class Context(NamedTuple):
    """What stays fixed while one batch of images is captioned."""

    features: torch.Tensor  # (B, L, D) annotation vectors a_i
    scores: LocationScores  # of d_i = 2 (W_a a_i + b), for the attention's tanh computed by way of sigmoid
    from_h: Callable[[torch.Tensor], torch.Tensor]  # the layers applied at every step: with gradients,
    gates_z: Callable[[torch.Tensor], torch.Tensor]  # StepLinear (one weight-gradient product for all steps)

    def rows(self, index: torch.Tensor) -> Context:
        """The context of the images ``index`` picks (a mask, or indices that may repeat)."""
        return self._replace(features=self.features[index], scores=self.scores.rows(index))


class Step(NamedTuple):
    h: torch.Tensor  # (B, n)
    c: torch.Tensor  # (B, n)
    z: torch.Tensor  # (B, D) gated context
    alpha: torch.Tensor  # (B, L)
    picked: torch.Tensor | None  # (B,) sampled location per row, EXPECTED where the expectation was used


class Teacher(NamedTuple):
    """A teacher-forced pass over a batch of captions."""

    logits: torch.Tensor  # (B, T, V) unnormalised log-probabilities of the next word
    alphas: torch.Tensor  # (B, T, L)
    picked: torch.Tensor | None  # (B, T) hard attention: sampled locations (EXPECTED for expectation rows)


class Captioner(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = c = config
        n, m, d, a = c.hidden_dim, c.embed_dim, c.feature_dim, c.attention_dim
        self.embed = nn.Embedding(c.vocab_size, m)
        # f_init,h and f_init,c: one-hidden-layer MLPs on the mean annotation vector (eq. 5).
        self.init_h = nn.Sequential(nn.Linear(d, n), nn.Tanh(), nn.Linear(n, n), nn.Tanh())
        self.init_c = nn.Sequential(nn.Linear(d, n), nn.Tanh(), nn.Linear(n, n))
        self.att_features = nn.Linear(d, a)  # W_a
        self.att_score = nn.Linear(a, 1, bias=False)  # w (a bias would cancel in the softmax)
        # h_{t-1} -> [U_a h (attention) | LSTM gates | f_beta (the scalar gate)], with the gates' bias.
        self.from_h = nn.Linear(n, a + 4 * n + 1)
        self.gates_y = nn.Linear(m, 4 * n, bias=False)  # E y_{t-1} -> LSTM gates
        self.gates_z = nn.Linear(d, 4 * n, bias=False)  # z_t -> LSTM gates
        self.out_h = nn.Linear(n, m)  # L_h
        self.out_z = nn.Linear(d, m, bias=False)  # L_z
        self.dropout = nn.Dropout(c.dropout)
        self.out = nn.Linear(m, c.vocab_size)  # L_o
        with torch.no_grad():  # forget gates start open: the usual LSTM initialisation
            self.from_h.bias[a + n : a + 2 * n].fill_(1.0)

    # --- pieces shared by training and decoding ---

    def context(self, features: torch.Tensor) -> Context:
        if features.shape[1:] != (self.config.num_locations, self.config.feature_dim):
            raise SatError(
                f"annotation vectors of shape {tuple(features.shape[1:])} do not fit this model, which was "
                f"built for L={self.config.num_locations} locations of D={self.config.feature_dim}"
            )
        kind = features.device.type
        if torch.is_autocast_enabled(kind):  # cast once, not at every step's product with alpha (bmm would)
            features = features.to(torch.get_autocast_dtype(kind))
        layers = (self.from_h, self.gates_z)
        if torch.is_grad_enabled() and self.from_h.weight.requires_grad:
            layers = tuple(StepLinear(layer) for layer in layers)
        return Context(features, LocationScores(2 * self.att_features(features)), *layers)

    def initial_state(self, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
        mean = ctx.features.mean(1)
        return self.init_h(mean), self.init_c(mean)

    def step(
        self,
        ctx: Context,
        h: torch.Tensor,
        c: torch.Tensor,
        word_gates: torch.Tensor,
        *,
        sample_rows: torch.Tensor | None = None,
        pick: torch.Tensor | None = None,
    ) -> Step:
        """One LSTM step from (h, c) = (h_{t-1}, c_{t-1}); ``word_gates`` is ``gates_y(E y_{t-1})``.

        ``h``, ``c`` and ``word_gates`` are (B, ...) with one row per image, or (B, K, ...) with K rows (beams)
        per image of the context.

        Hard attention: rows where ``sample_rows`` (B,) is True draw s_t ~ Multinoulli(alpha_t), the
        others use the expected context; ``pick`` (B,) imposes the locations instead (EXPECTED: the
        expectation). With neither, every row uses the expected context (soft attention, decoding).
        """
        a, n = self.config.attention_dim, self.config.hidden_dim
        att_h, gates_h, beta = ctx.from_h(h).split((a, 4 * n, 1), dim=-1)
        # Rows of h may be several per image (beams): (images, rows per image, A), scored without copying the image.
        images, lead = ctx.features.shape[0], h.shape[:-1]
        att_h = att_h.reshape(images, -1, a)
        # e_ti = w . tanh(u_ti) = 2 w . sigmoid(2 u_ti) - sum(w): the last term is the same at every location,
        # so the softmax drops it, and a CPU's sigmoid takes a third of tanh's time over B x L x A.
        scores = ctx.scores(2 * att_h, self.att_score.weight).view(*lead, -1)
        alpha = torch.softmax(2 * scores, dim=-1)
        z = torch.bmm(alpha.view(images, -1, alpha.shape[-1]), ctx.features).view(*lead, -1)
        if pick is None and sample_rows is not None:
            with torch.no_grad():
                drawn = torch.multinomial(alpha.float(), 1).squeeze(1)
            pick = torch.where(sample_rows, drawn, torch.full_like(drawn, EXPECTED))
        if pick is not None:
            rows = torch.arange(len(pick), device=pick.device)
            sampled = ctx.features[rows, pick.clamp(min=0)]
            z = torch.where((pick >= 0).unsqueeze(1), sampled, z)
        z = torch.sigmoid(beta) * z
        i, f, g, o = (word_gates + gates_h + ctx.gates_z(z)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return Step(h, c, z, alpha, pick)

    def logits(
        self, embedded: torch.Tensor, h: torch.Tensor, z: torch.Tensor, dropped: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The deep output layer (eq. 7), for any leading shape; ``dropped``: a :meth:`dropout_mask` to use instead of
        a fresh draw (in eval mode too), so that two passes over one batch drop the same units."""
        hidden = torch.tanh(embedded + self.out_h(h) + self.out_z(z))
        return self.out(self.dropout(hidden) if dropped is None else hidden * dropped.to(hidden.dtype))

    def dropout_mask(self, captions: int, steps: int, device: torch.device) -> torch.Tensor | None:
        """The deep output's dropout for (captions, steps) as a tensor: 0 or 1 / (1 - p); None where nothing drops."""
        p = self.config.dropout
        if not self.training or p == 0:
            return None
        keep = torch.empty(captions, steps, self.config.embed_dim, device=device).bernoulli_(1 - p)
        return keep / (1 - p)

    # --- training ---

    def forward(
        self,
        features: torch.Tensor,
        inputs: torch.Tensor,
        *,
        sample_rows: torch.Tensor | None = None,
        locations: torch.Tensor | None = None,
        dropped: torch.Tensor | None = None,
    ) -> Teacher:
        """Teacher-forced pass: ``inputs`` (B, T) holds y_0 = <start>, y_1 .. y_{T-1}.

        Hard attention: rows where ``sample_rows`` (B,) is True draw s_t ~ Multinoulli(alpha_t) at each
        step; the other rows use the expected context (the paper's 0.5-probability trick). ``locations``
        (B, T) imposes the locations instead of sampling (EXPECTED: use the expectation). ``dropped`` (B, T, m):
        the deep output's dropout (:meth:`dropout_mask`) instead of a fresh draw.
        """
        ctx = self.context(features)
        h, c = self.initial_state(ctx)
        embedded = self.embed(inputs)
        word_gates = self.gates_y(embedded).unbind(1)  # one backward copy, not a zero-filled (B, T, 4n) per step
        if self.config.attention != "hard":
            sample_rows = locations = None
        hs, zs, alphas, picks = [], [], [], []
        for t in range(inputs.shape[1]):
            pick = None if locations is None else locations[:, t]
            step = self.step(ctx, h, c, word_gates[t], sample_rows=sample_rows, pick=pick)
            h, c = step.h, step.c
            hs.append(h)
            zs.append(step.z)
            alphas.append(step.alpha)
            picks.append(step.picked)
        logits = self.logits(embedded, torch.stack(hs, 1), torch.stack(zs, 1), dropped)
        picked = torch.stack(picks, 1) if picks[0] is not None else None
        return Teacher(logits, torch.stack(alphas, 1), picked)


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into Python numbers and lists (what weights_only loads)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


def save_model(path: str | Path, model: Captioner, state_dict: dict[str, torch.Tensor], **about: Any) -> None:
    """A model file: the weights ``state_dict`` of ``model``'s shape, its config, and ``about`` it (vocab, features...).

    Only tensors and plain values, so that :func:`load_model` can read it with ``weights_only=True``.
    """
    document = plain({"format": MODEL_FORMAT, "config": model.config.to_dict(), **about})
    document["state_dict"] = state_dict
    with atomic_output(path) as tmp:
        save_torch(document, tmp)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[Captioner, dict]:
    """A trained captioner in eval mode, and the rest of its model file (vocab, features, settings).

    The file is read with ``weights_only=True``: tensors and plain values only, so a file carrying a
    pickled object (which would run code when unpickled) is refused, as is anything not written by the
    train stage.
    """
    try:
        document = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:  # what weights_only raises for anything but tensors and plain values
        raise SatError(
            f"refusing the model file {path}: it holds Python objects other than tensors and plain values, "
            "which could run code when loaded (a model file of an earlier version of this workflow: retrain it)"
        ) from e
    except Exception as e:  # noqa: BLE001 - unreadable or truncated: all are refused
        raise SatError(f"cannot read the model file {path}: {first_line(e)}") from e
    if not isinstance(document, dict) or document.get("format") != MODEL_FORMAT:
        raise SatError(f"{path} is not a model file written by this workflow ({MODEL_FORMAT})")
    missing = [k for k in ("config", "state_dict", "vocab", "features") if k not in document]
    if missing:
        raise SatError(f"{path} is not a complete model file: it has no {', '.join(missing)}")
    if problem := _document_problem(document):
        raise SatError(f"{path} does not hold a consistent model: {problem}")
    try:
        config = ModelConfig(**document["config"])
        with torch.device("meta"):  # shapes only: the file's own tensors become the weights, nothing is allocated
            model = Captioner(config)
        model.load_state_dict(document["state_dict"], assign=True)
    except (TypeError, ValueError, RuntimeError, AttributeError) as e:
        # load_state_dict says "Error(s) in loading state_dict ...:" first and what is wrong on the next line.
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]
        raise SatError(f"{path} does not hold a consistent model: {reason}") from e
    return model.to(device).eval(), document


SIZES = ("vocab_size", "num_locations", "feature_dim", "embed_dim", "hidden_dim", "attention_dim")
FEATURE_TYPES = {"encoder": str, "layer": str, "weights": str, "image_size": int, "dim": int, "grid": list}


def _document_problem(document: dict) -> str | None:
    """What in a model file's document is not what the train stage writes (and decoding and captioning read)."""

    def count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    config, vocab, features, weights = (document[k] for k in ("config", "vocab", "features", "state_dict"))
    if not isinstance(config, dict) or not all(count(config.get(k)) for k in SIZES):
        return f"its config needs positive integer {', '.join(SIZES)}"
    if not isinstance(config.get("dropout", 0.0), (int, float)) or not 0 <= config.get("dropout", 0.0) <= 1:
        return "its config's dropout is not a number from 0 to 1"
    if not isinstance(vocab, list) or not all(isinstance(w, str) for w in vocab):
        return "its vocab is not a list of words"
    if len(vocab) != config["vocab_size"]:
        return f"{len(vocab)} words in its vocabulary, {config['vocab_size']} in its config"
    if tuple(vocab[: len(SPECIALS)]) != SPECIALS:
        return f"its vocabulary does not begin with {', '.join(SPECIALS)} (decoding starts and ends at them)"
    if not isinstance(features, dict):
        return "its features entry is not a table"
    wrong = [k for k, kind in FEATURE_TYPES.items() if not isinstance(features.get(k), kind)]
    grid = features.get("grid")
    if wrong or not count(features["image_size"]) or len(grid) != 2 or not all(count(g) for g in grid):
        return f"its features entry needs {', '.join(FEATURE_TYPES)} of the right types (found {features})"
    if not isinstance(weights, dict) or not all(
        isinstance(t, torch.Tensor) and t.dtype == torch.float32 for t in weights.values()
    ):
        return "its state_dict is not a table of float32 tensors"
    return None
