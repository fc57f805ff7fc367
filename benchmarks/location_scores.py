"""The attention's scores over B x L x A, forward and backward: a block of images at a time against eager PyTorch.

Times what ``show_attend_tell.location_scores`` replaces on its own: a recurrence of ``--steps`` steps, each
scoring every location from its own h_{t-1} (the sum d_i + 2 U_a h, the sigmoid, the product with w, the
softmax), then the backward pass to d, U_a and w. The eager version is the three operations as the model wrote
them before; ours runs with the blocks of each ``--block-mib`` (the module's BLOCK_BYTES is the default; ``all``
= one block of the whole batch). All are timed in turns, round after round, and their gradients compared with the eager
ones bit for bit. A token is one step of one caption (B tokens a step), so the rates compare with
``training_throughput.py``'s.

    .venv/bin/python benchmarks/location_scores.py --threads 2
    .venv/bin/python benchmarks/location_scores.py --locations 81 --threads 2 --block-mib 1 4 16 all
"""

from __future__ import annotations

import argparse

import roofline
import torch
from training_throughput import add_machine_options, in_turns, set_up_machine

from show_attend_tell.location_scores import LocationScores


def eager_scores(doubled: torch.Tensor, att_h2: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The model's scores before ``location_scores``: (B, L, A) and (B, 1, A) -> (B, 1, L)."""
    return torch.nn.functional.linear(torch.sigmoid(doubled.unsqueeze(1) + att_h2.unsqueeze(2)), weight).squeeze(-1)


def recurrence(block_bytes: int | None, projected, u, w, positions):
    """A step function over a batch of h's: the scores of every step, a softmax loss, its backward pass."""

    def run(hs: list[torch.Tensor]) -> None:
        doubled = 2 * projected
        if block_bytes is not None:
            scores_of = LocationScores(doubled, block_bytes)
        loss = 0
        for h in hs:
            att_h2 = 2 * (h @ u).unsqueeze(1)
            scores = eager_scores(doubled, att_h2, w) if block_bytes is None else scores_of(att_h2, w)
            loss = loss + (torch.softmax(2 * scores, -1) * positions).sum()
        for p in (projected, u, w):
            p.grad = None
        loss.backward()

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--locations", type=int, default=196)
    p.add_argument("--attention-dim", type=int, default=512)
    p.add_argument("--hidden-dim", type=int, default=512)
    p.add_argument("--steps", type=int, default=12, help="steps of the recurrence (words of a caption, + <end>)")
    p.add_argument("--block-mib", nargs="+", default=["1", "2", "4", "8", "16", "all"])
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    add_machine_options(p)
    args = p.parse_args()
    device, host = set_up_machine(args)
    b, n, a = args.batch_size, args.locations, args.attention_dim
    positions = torch.arange(n, dtype=torch.float32, device=device)
    g = torch.Generator().manual_seed(0)
    projected = torch.randn(b, n, a, generator=g).to(device).requires_grad_()
    u = (0.05 * torch.randn(args.hidden_dim, a, generator=g)).to(device).requires_grad_()
    w = (0.05 * torch.randn(1, a, generator=g)).to(device).requires_grad_()
    batches = [
        ([torch.randn(b, args.hidden_dim, generator=g).to(device) for _ in range(args.steps)],)
        for _ in range(args.batches + args.warmup)
    ]
    sizes: dict[str, int | None] = {"eager": None}
    for mib in args.block_mib:
        sizes[f"blocks of {mib} MiB"] = 1 << 60 if mib == "all" else int(float(mib) * (1 << 20))
    steps = {name: recurrence(size, projected, u, w, positions) for name, size in sizes.items()}
    gradients = {}
    for name, step in steps.items():
        step(*batches[0])
        gradients[name] = [t.grad.clone() for t in (projected, u, w)]
    seconds = in_turns(steps, batches, args.rounds, args.warmup, device)

    print(roofline.host_line(host))
    print(
        f"attention scores, forward and backward, {device} ({torch.get_num_threads()} threads): batch {b}, L={n}, "
        f"A={a}, {args.steps} steps; each the median of {args.rounds} round(s) in turns of {args.batches} batches"
    )
    eager = seconds["eager"]
    for name, spent in seconds.items():
        same = all(torch.equal(x, y) for x, y in zip(gradients[name], gradients["eager"], strict=True))
        tokens = b * args.steps / spent
        print(
            f"{name:20s} {tokens:9.1f} tokens/s   {1000 * spent / args.steps:6.2f} ms a step   "
            f"{eager / spent:5.2f}x eager   gradients {'the same bit for bit' if same else 'differ'}"
        )


if __name__ == "__main__":
    main()
