"""Training tokens/s: our captioner against a straightforward per-step decoder of equal dimensions.

The straightforward decoder is written the way the most used public PyTorch port writes it: at every
step it projects all L annotation vectors for the attention again, gates the context with a
D-dimensional vector, runs an LSTMCell on [embedding; context], and applies the vocabulary layer to
that step alone; captions of a batch are sorted by length and the batch shrinks as captions end.
Ours projects the annotations once per batch, precomputes the word embeddings' share of the LSTM
gates, fuses the three projections of h_{t-1}, and applies the deep output layer once over all steps;
its batches hold captions of one length (the paper's length dictionary), so it never shrinks either.

Both are timed on the same random batches of one caption length (forward, backward, optimizer step),
so the comparison is of the decoders alone, each at its default precision: ours in what
``precision: auto`` picks on this machine (bfloat16 autocast only where its probe finds it faster),
the port in float32. Default dimensions are the paper's (VGG 14x14x512, 10,000 words; embedding 512,
LSTM 1800, attention 512 as in the authors' code).

Roofline: the host line gives the matmul peak measured in the same run, in float32 and bfloat16; each
of our rows gives the GFLOP/s it achieved by the hand count of :func:`flops_per_token` (the
multiply-adds of the forward pass, x2 for FLOPs, x3 for forward and backward), as a share of the peak of
the precision it ran in.

    .venv/bin/python benchmarks/training_throughput.py
    .venv/bin/python benchmarks/training_throughput.py --hidden-dim 512 --embed-dim 256 --attention-dim 256
    .venv/bin/python benchmarks/training_throughput.py --precision float32 --rounds 3

``--rounds N`` times ours (soft, hard) and the port in turns N times and reports each one's median round, so a
host whose speed drifts over minutes moves all three alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import roofline
import torch
import torch.nn.functional as F
from torch import nn

from show_attend_tell import heap, objectives, precision
from show_attend_tell.devices import resolve_device
from show_attend_tell.machine import describe
from show_attend_tell.model import Captioner, ModelConfig


def flops_per_token(c: ModelConfig, words: int) -> float:
    """Training FLOPs per target token of our captioner: 2 x 3 x the forward pass's multiply-adds.

    Per step: the fused projection of h_{t-1}, the attention scores and context, the LSTM gates of z_t
    and E y_{t-1}, and the deep output layer; per caption, spread over its steps: W_a a_i and the two
    initial-state MLPs. Elementwise work (tanh, softmax, gates) is left out: it is not matmul work.
    """
    n, m, a, d, big_l, v = c.hidden_dim, c.embed_dim, c.attention_dim, c.feature_dim, c.num_locations, c.vocab_size
    per_step = n * (a + 4 * n + 1) + big_l * a + big_l * d + 4 * n * d + 4 * n * m + n * m + d * m + m * v
    per_caption = big_l * d * a + 2 * (d * n + n * n)
    return 2 * 3 * (per_step + per_caption / (words + 1))


def add_dimensions(p: argparse.ArgumentParser) -> None:
    """The batch's and the model's sizes (the paper's by default)."""
    p.add_argument("--vocab-size", type=int, default=10004)
    p.add_argument("--locations", type=int, default=196)
    p.add_argument("--feature-dim", type=int, default=512)
    p.add_argument("--embed-dim", type=int, default=512)
    p.add_argument("--hidden-dim", type=int, default=1800)
    p.add_argument("--attention-dim", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--words", type=int, default=11, help="caption length in words (Flickr8k's median is 11)")


def model_config(args: argparse.Namespace, attention: str) -> ModelConfig:
    """The captioner of the sizes :func:`add_dimensions` reads, with the paper's dropout."""
    sizes = dict(embed_dim=args.embed_dim, hidden_dim=args.hidden_dim, attention_dim=args.attention_dim)
    return ModelConfig(args.vocab_size, args.locations, args.feature_dim, attention=attention, dropout=0.5, **sizes)


def captioner(config: ModelConfig, device: torch.device) -> tuple[Captioner, torch.optim.Optimizer]:
    """Our captioner in training mode, seeded, with the optimizer the train stage makes."""
    torch.manual_seed(0)
    model = Captioner(config).to(device).train()
    return model, torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)


def training_step(model: Captioner, optimizer: torch.optim.Optimizer, precision_name: str):
    """One training step of ours on a batch (features, tokens): forward, objective, backward, clipping, update."""

    def step(features: torch.Tensor, tokens: torch.Tensor) -> None:
        device = features.device
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        mask = torch.ones(targets.shape, device=device)
        with precision.autocast(device, precision_name):
            out = model(features, inputs, sample_rows=torch.rand(len(tokens), device=device) >= 0.5)
        if model.config.attention == "hard":
            terms = objectives.hard_objective(out, targets, mask, baseline=None, lambda_r=1.0, lambda_e=0.002)
        else:
            terms = objectives.soft_objective(out, targets, mask, alpha_c=1.0)
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    return step


def add_machine_options(p: argparse.ArgumentParser) -> None:
    """Where the step runs: ``--device`` and ``--threads``."""
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)


def set_up_machine(args: argparse.Namespace) -> tuple[torch.device, dict[str, object]]:
    """The device and threads of :func:`add_machine_options`, freed memory kept as training keeps it; the host."""
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cpu":
        heap.keep_freed_memory()  # as training does
    return device, describe(device)


def choose_precision(
    wanted: str, model: Captioner, optimizer: torch.optim.Optimizer, batch: tuple, device: torch.device
) -> str:
    """``wanted``, or for auto what the train stage would pick: a probe of a few of our steps in each precision."""

    def probe(name: str) -> float:
        return time_steps(training_step(model, optimizer, name), [batch] * 4, 1, device)

    return precision.choose(wanted, device, probe)


class PerStepDecoder(nn.Module):
    """The straightforward decoder (see the module docstring), with the same doubly stochastic loss."""

    def __init__(self, vocab: int, dim: int, embed: int, hidden: int, attention: int, dropout: float) -> None:
        super().__init__()
        self.encoder_att = nn.Linear(dim, attention)
        self.decoder_att = nn.Linear(hidden, attention)
        self.full_att = nn.Linear(attention, 1)
        self.embedding = nn.Embedding(vocab, embed)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTMCell(embed + dim, hidden)
        self.init_h = nn.Linear(dim, hidden)
        self.init_c = nn.Linear(dim, hidden)
        self.f_beta = nn.Linear(hidden, dim)
        self.fc = nn.Linear(hidden, vocab)

    def forward(self, features: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor):
        lengths, order = lengths.sort(descending=True)
        features, tokens = features[order], tokens[order]
        embeddings = self.embedding(tokens)
        mean = features.mean(1)
        h, c = self.init_h(mean), self.init_c(mean)
        steps = (lengths - 1).tolist()
        batch, length = tokens.shape[0], max(steps)
        logits = torch.zeros(batch, length, self.fc.out_features, device=features.device)
        alphas = torch.zeros(batch, length, features.shape[1], device=features.device)
        for t in range(length):
            n = sum(s > t for s in steps)
            att = self.full_att(torch.relu(self.encoder_att(features[:n]) + self.decoder_att(h[:n]).unsqueeze(1)))
            alpha = torch.softmax(att.squeeze(2), dim=1)
            context = torch.sigmoid(self.f_beta(h[:n])) * (features[:n] * alpha.unsqueeze(2)).sum(1)
            h, c = self.lstm(torch.cat([embeddings[:n, t], context], dim=1), (h[:n], c[:n]))
            logits[:n, t] = self.fc(self.dropout(h))
            alphas[:n, t] = alpha
        return logits, alphas, tokens[:, 1:]


def random_batches(args: argparse.Namespace, device: torch.device, count: int):
    g = torch.Generator().manual_seed(0)
    for _ in range(count):
        features = torch.randn(args.batch_size, args.locations, args.feature_dim, generator=g).to(device)
        tokens = torch.randint(4, args.vocab_size, (args.batch_size, args.words + 2), generator=g).to(device)
        yield features, tokens


def time_steps(step, batches, warmup: int, device: torch.device) -> float:
    """Seconds per batch of ``step`` after ``warmup`` batches."""
    times = []
    for i, batch in enumerate(batches):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step(*batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def in_turns(steps: dict, batches: list, rounds: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Median seconds per batch of each of ``steps``, timed in turns, round after round.

    On a noisy host the steps then share the same moments, so their ratios hold even where the speed drifts.
    """
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            seconds[name].append(time_steps(step, batches, warmup, device))
    return {name: statistics.median(times) for name, times in seconds.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dimensions(p)
    p.add_argument("--batches", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=1, help="time ours and the port in turns this many times")
    add_machine_options(p)
    p.add_argument("--precision", default="auto", choices=precision.PRECISIONS, help="ours (the port: float32)")
    args = p.parse_args()
    device, host = set_up_machine(args)
    tokens_per_batch = args.batch_size * (args.words + 1)
    steps, chosen = {}, {}

    for attention in ("soft", "hard"):
        config = model_config(args, attention)
        model, optimizer = captioner(config, device)
        name = choose_precision(args.precision, model, optimizer, next(random_batches(args, device, 1)), device)
        steps[f"ours, {attention} attention"] = training_step(model, optimizer, name)
        chosen[f"ours, {attention} attention"] = (name, config)

    torch.manual_seed(0)
    baseline = (
        PerStepDecoder(args.vocab_size, args.feature_dim, args.embed_dim, args.hidden_dim, args.attention_dim, 0.5)
        .to(device)
        .train()
    )
    optimizer = torch.optim.Adam(baseline.parameters(), lr=1e-4)

    def per_step(features, tokens):
        lengths = torch.full((len(tokens),), tokens.shape[1], device=device)
        logits, alphas, targets = baseline(features, tokens, lengths)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum") / len(tokens)
        loss = loss + ((1.0 - alphas.sum(1)) ** 2).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(baseline.parameters(), 5.0)
        optimizer.step()

    steps["per-step decoder, soft attention"] = per_step
    batches = list(random_batches(args, device, args.batches + args.warmup))
    seconds = in_turns(steps, batches, args.rounds, args.warmup, device)
    rates = {name: tokens_per_batch / spent for name, spent in seconds.items()}

    reference = rates["per-step decoder, soft attention"]
    print(roofline.host_line(host))
    print(
        f"training tokens/s on {device} ({torch.get_num_threads()} threads): batch {args.batch_size} captions of "
        f"{args.words} words (+<end>), L={args.locations}, D={args.feature_dim}, V={args.vocab_size}, "
        f"embed {args.embed_dim}, LSTM {args.hidden_dim}, attention {args.attention_dim}; each the median of "
        f"{args.rounds} round(s) in turns, a round the median of {args.batches} batches after {args.warmup} warm-up"
    )
    for name, rate in rates.items():
        line = f"{name:36s} {rate:9.1f} tokens/s   {rate / reference:5.2f}x the per-step decoder"
        if name in chosen:
            dtype, config = chosen[name]
            line += roofline.row(rate, flops_per_token(config, args.words), "token", dtype, host, device)
        else:
            line += "   float32"
        print(line)


if __name__ == "__main__":
    main()
