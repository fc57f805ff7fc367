"""The training step with the recurrent layers' weight gradients in one product (StepLinear) or one per step.

The decoder applies ``from_h`` and ``gates_z`` at every step; ``show_attend_tell.step_linear`` computes
their weight gradients as one product over all steps instead of autograd's one small product per step.
Runs minutes apart on a 2-core host differ by more than this change, so both are timed in this one
process, in turns (``--rounds``), on the same batches; the per-step version is the same model with the
layers called directly. Prints the host line (CPU, matmul peaks) and each version's median.

    .venv/bin/python benchmarks/step_weight_gradients.py --precision float32 \\
        --hidden-dim 512 --embed-dim 256 --attention-dim 256 --locations 49 --feature-dim 352 --vocab-size 2504
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager

import roofline
import torch
from training_throughput import add_dimensions, captioner, in_turns, model_config, random_batches, training_step

from show_attend_tell import heap, model
from show_attend_tell.machine import describe


@contextmanager
def per_step_weight_gradients():
    """The decoder calls its layers at every step, as without StepLinear."""
    deferred = model.StepLinear
    model.StepLinear = lambda layer: layer
    try:
        yield
    finally:
        model.StepLinear = deferred


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dimensions(p)
    p.add_argument("--attention", default="soft", choices=model.ATTENTIONS)
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, default=5, help="timed batches per version and round")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    heap.keep_freed_memory()  # as training does
    host = describe(device)
    net, optimizer = captioner(model_config(args, args.attention), device)
    step = training_step(net, optimizer, args.precision)

    def per_step(features: torch.Tensor, tokens: torch.Tensor) -> None:
        with per_step_weight_gradients():
            step(features, tokens)

    batches = list(random_batches(args, device, args.batches + 1))
    steps = {"one product over all steps": step, "one product per step": per_step}
    seconds = in_turns(steps, batches, args.rounds, 1, device)
    print(roofline.host_line(host))
    print(
        f"{args.attention} training step, {args.precision}, {torch.get_num_threads()} threads: batch "
        f"{args.batch_size} x {args.words + 1} tokens, L={args.locations}, D={args.feature_dim}, V={args.vocab_size}, "
        f"embed {args.embed_dim}, LSTM {args.hidden_dim}, attention {args.attention_dim}; median of {args.rounds} "
        f"rounds of {args.batches} batches"
    )
    tokens = args.batch_size * (args.words + 1)
    base = seconds["one product per step"]
    for name, spent in seconds.items():
        print(f"{name:28s} {1000 * spent:7.1f} ms per batch {tokens / spent:8.1f} tokens/s   {base / spent:5.2f}x")


if __name__ == "__main__":
    main()
