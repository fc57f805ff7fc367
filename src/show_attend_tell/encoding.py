"""The frozen CNN run on batches of images: set up on its device, in the precision this machine runs fastest.

Shared by feature extraction (every image of a dataset) and captioning (a user's own images).
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from . import encoders, heap, precision

# How prepare_encoder's network computes, recorded with the features: a .partial file written by code that
# computed otherwise (before batch norms were folded, say) is started afresh, not continued with other numbers.
# Change it with the arithmetic.
ARITHMETIC = "batch norms folded into the convolutions, ReLU6 fused into them; 16-bit weights, not autocast"


def prepare_encoder(
    name: str, layer: str | None, pretrained: bool, device: torch.device, precision_name: str = "float32"
) -> nn.Module:
    """The frozen encoder for inference on ``device``, computing in ``precision_name``'s dtype.

    Its batch norms are folded into the convolutions before them, and its weights are in channels-last
    layout, which runs convolutions fastest on CPU and GPU. The whole network holds 16-bit weights rather
    than running under autocast: autocast would convert every weight again at every batch.
    """
    if device.type == "cpu":
        heap.keep_freed_memory()
    model = encoders.fuse_for_inference(encoders.build(name, layer, pretrained))
    return model.to(device, precision.DTYPES[precision_name], memory_format=torch.channels_last)


def encode_batch(model: nn.Module, images: torch.Tensor, name: str, device: torch.device) -> torch.Tensor:
    """Annotation vectors (B, L, D) float16 of a uint8 (B, 3, S, S) batch, L running row-major over the grid.

    Normalisation is float32; the CNN computes in the dtype of its weights (see ``prepare_encoder``).
    """
    dtype = next(model.parameters()).dtype
    x = encoders.normalize(images.to(device, non_blocking=True), name)
    fmap = model(x.to(dtype).contiguous(memory_format=torch.channels_last))
    return fmap.flatten(2).transpose(1, 2).to(torch.float16)


def choose_precision(
    wanted: str, model: nn.Module, name: str, layer: str, image_size: int, batch_size: int, device: torch.device
) -> str:
    """``wanted``, or for auto what a probe of one batch of random pixels through ``model`` finds faster.

    ``model`` is a float32 encoder from ``prepare_encoder``; a 16-bit copy of it is probed. Inference
    alone, so float16 is allowed on CUDA (for GPUs without native bfloat16).
    """
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (batch_size, 3, image_size, image_size), generator=generator)
    models: dict[str, nn.Module] = {}

    def probe(precision_name: str) -> float:
        if precision_name not in models:  # the first pass in each precision sets up its kernels
            dtype = precision.DTYPES[precision_name]
            models[precision_name] = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
            with torch.inference_mode():
                encode_batch(models[precision_name], pixels, name, device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            encode_batch(models[precision_name], pixels, name, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    workload = f"features {name} {layer} {image_size}px batch={batch_size}"
    return precision.choose(wanted, device, probe, workload, float16=True)
