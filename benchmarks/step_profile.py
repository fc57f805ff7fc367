"""Where our training step spends its time: the profiler's operators, and their share by what they work on.

``training_throughput.py`` says how fast the step is; this says what is left in it. One step of ours (soft
or hard) runs under ``torch.profiler`` after warm-up batches, and its operators are grouped by the shapes
they read: the attention's B x L x A work (the broadcast sum, the sigmoid, the scores, the context and their
gradients: any input with L locations, B x L rows, or L x A or L x D values an image, whole batches or
blocks of images), the vocabulary layer (an input with V columns or rows), the optimizer, and the rest (the
per-step products of B rows, the LSTM's gates, ...).
Prints the host line (CPU, matmul peaks), the shares, and the costliest operators by input shape.

    .venv/bin/python benchmarks/step_profile.py --hidden-dim 512 --threads 2
    .venv/bin/python benchmarks/step_profile.py --precision float32 --hidden-dim 512 --embed-dim 512 \\
        --locations 64 --feature-dim 992 --vocab-size 2504
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict

import roofline
import torch
from torch.profiler import ProfilerActivity, profile
from training_throughput import (
    add_dimensions,
    add_machine_options,
    captioner,
    choose_precision,
    model_config,
    random_batches,
    set_up_machine,
    training_step,
)

from show_attend_tell import precision


def category(name: str, shapes: list, args: argparse.Namespace) -> str:
    """What an operator works on, from the shapes of its inputs."""
    rows = args.batch_size * args.locations
    per_image = (args.locations * args.attention_dim, args.locations * args.feature_dim)
    dims = [list(s) for s in shapes if isinstance(s, (list, tuple)) and s and all(isinstance(d, int) for d in s)]
    if "adam" in name.lower() or "optimizer" in name.lower():
        return "optimizer"
    # Whole batches or blocks of images (location_scores): L locations, or L x A or L x D values an image.
    if any(rows in s or args.locations in s or any(math.prod(s) % n == 0 for n in per_image) for s in dims):
        return "attention over B x L"
    if any(args.vocab_size in s for s in dims):
        return "vocabulary layer"
    return "rest"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dimensions(p)
    p.add_argument("--attention", default="soft", choices=("soft", "hard"))
    p.add_argument("--batches", type=int, default=2, help="batches profiled, after --warmup")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--top", type=int, default=15)
    add_machine_options(p)
    p.add_argument("--precision", default="auto", choices=precision.PRECISIONS)
    args = p.parse_args()
    device, host = set_up_machine(args)
    model, optimizer = captioner(model_config(args, args.attention), device)
    batches = list(random_batches(args, device, args.warmup + args.batches))
    name = choose_precision(args.precision, model, optimizer, batches[0], device)
    step = training_step(model, optimizer, name)
    for batch in batches[: args.warmup]:
        step(*batch)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for batch in batches[args.warmup :]:
            step(*batch)
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    shares: dict[str, float] = defaultdict(float)
    for e in events:
        shares[category(e.key, e.input_shapes, args)] += e.self_cpu_time_total
    print(roofline.host_line(host))
    print(
        f"{args.attention} attention, {name}, {torch.get_num_threads()} threads: batch {args.batch_size} captions of "
        f"{args.words} words, L={args.locations}, D={args.feature_dim}, V={args.vocab_size}, embed {args.embed_dim}, "
        f"LSTM {args.hidden_dim}, attention {args.attention_dim}; {total / 1e3 / args.batches:.0f} ms of operators "
        f"per batch under the profiler"
    )
    for what, spent in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"  {what:22s} {100 * spent / total:5.1f}%")
    print(f"the {args.top} costliest operators (self time per batch, calls per batch, input shapes):")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        shapes = ", ".join(str(list(s)) for s in e.input_shapes if s)
        print(
            f"  {e.self_cpu_time_total / 1e3 / args.batches:8.1f} ms {e.count // args.batches:5d}x  {e.key:28s} "
            f"{category(e.key, e.input_shapes, args):22s} {shapes[:80]}"
        )


if __name__ == "__main__":
    main()
