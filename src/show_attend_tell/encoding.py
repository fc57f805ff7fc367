"""The frozen CNN run on batches of images: set up on its device, in the precision this machine runs fastest.

Shared by feature extraction (every image of a dataset) and captioning (a user's own images).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from . import encoders, heap, precision


def prepare_encoder(name: str, layer: str | None, pretrained: bool, device: torch.device) -> nn.Module:
    """The frozen encoder on ``device`` in channels-last layout, which runs convolutions fastest on CPU and GPU."""
    if device.type == "cpu":
        heap.keep_freed_memory()
    return encoders.build(name, layer, pretrained).to(device, memory_format=torch.channels_last)


def encode_batch(
    model: nn.Module, images: torch.Tensor, name: str, device: torch.device, precision_name: str = "float32"
) -> torch.Tensor:
    """Annotation vectors (B, L, D) float16 of a uint8 (B, 3, S, S) batch, L running row-major over the grid.

    Normalisation is float32 either way; ``precision_name`` bfloat16 runs the CNN under bfloat16 autocast.
    """
    x = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
    with precision.autocast(device, precision_name):
        fmap = model(encoders.normalize(x, name))
    return fmap.flatten(2).transpose(1, 2).to(torch.float16)


def choose_precision(
    wanted: str, model: nn.Module, name: str, layer: str, image_size: int, batch_size: int, device: torch.device
) -> str:
    """``wanted``, or for auto what a probe of one batch of random pixels through ``model`` finds faster.

    Inference alone, so float16 is allowed on CUDA (for GPUs without native bfloat16).
    """
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (batch_size, 3, image_size, image_size), generator=generator)
    warmed: set[str] = set()

    def probe(precision_name: str) -> float:
        if precision_name not in warmed:  # the first pass in each precision sets up its kernels
            warmed.add(precision_name)
            with torch.inference_mode():
                encode_batch(model, pixels, name, device, precision_name)
        t0 = time.perf_counter()
        with torch.inference_mode():
            encode_batch(model, pixels, name, device, precision_name)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    workload = f"features {name} {layer} {image_size}px batch={batch_size}"
    return precision.choose(wanted, device, probe, workload, float16=True)
