"""Which device a stage computes on, and a clear error when the GPUs a job was given are not there."""

from __future__ import annotations

import os
import socket

import torch

from .errors import SatError


def resolve_device(device: str, declared_gpus: int = 0) -> torch.device:
    """``auto`` is cuda when present, else cpu; a requested device that is not there is a SatError.

    ``declared_gpus`` is what the job asked its scheduler for (the rule's ``gpu`` resource): a job
    declared to have GPUs that sees fewer would otherwise run for days on the CPU without a word.
    """
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError) as e:
            raise SatError(f"unknown device {device!r}; use auto, cpu or cuda") from e
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise SatError(
                f"device {device!r} requested but CUDA is not available here{_why_no_gpu()}; use --device auto or cpu"
            )
    if declared_gpus > 0 and device != "cpu":  # device cpu: the user runs on the CPU on purpose
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if found < declared_gpus:
            raise SatError(
                f"this job was declared to have {declared_gpus} GPU(s) (resource gpu={declared_gpus}) "
                f"but {found} {'is' if found == 1 else 'are'} visible on {socket.gethostname()}"
                f"{_why_no_gpu()}. Check the partition's GPUs and the job's --gpus/--gres, or set "
                "gpus: 0 (and device: cpu) to run on the CPU on purpose."
            )
    return dev


def _why_no_gpu() -> str:
    """What the environment says about the missing GPUs, for the error message."""
    if torch.version.cuda is None:
        return " (this PyTorch build has no CUDA support: install a CUDA build of torch)"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return f" (CUDA_VISIBLE_DEVICES={visible!r})"
    return " (no CUDA driver or device found)"
