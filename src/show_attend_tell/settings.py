"""The training settings: one frozen dataclass, checked against the workflow's schema (config key `train`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import check_section
from .model import ModelConfig

MODEL_KEYS = ("attention", "embed_dim", "hidden_dim", "attention_dim", "dropout")


@dataclass(frozen=True)
class Settings:
    """Training hyperparameters (config key `train`, merged with the model's own keys)."""

    attention: str = "soft"
    embed_dim: int = 512
    hidden_dim: int = 1800
    attention_dim: int = 512
    dropout: float = 0.5
    optimizer: str = "adam"
    learning_rate: float = 4e-4
    lr_decay: float = 1.0  # learning rate multiplied by this after every epoch
    batch_size: int = 64
    max_epochs: int = 20
    patience: int = 4  # epochs without a better validation score before stopping
    select_on: str = "cider"  # the validation score that selects the epoch: cider, bleu4 or nll
    clip_norm: float | None = 5.0
    alpha_c: float = 1.0  # lambda of the doubly stochastic penalty (eq. 14)
    lambda_r: float = 1.0  # hard attention: weight of the REINFORCE term (eq. 12)
    lambda_e: float = 0.002  # hard attention: weight of the entropy bonus
    semi_sampling_p: float = 0.5  # hard attention: probability an image uses the expected context
    baseline: str = "moving_average"  # hard attention: moving_average (the paper's) or expected_context
    baseline_decay: float = 0.9  # hard attention: b <- decay * b + (1 - decay) * log p(y | s, a) per word
    max_decode_length: int = 30
    val_beam_size: int = 1  # beam size of the validation decoding (1: greedy)
    val_images: int | None = None  # decode only the first N validation images (None: all)
    decode_batch_size: int = 250
    ema_decay: float = 0.0  # validate and keep an exponential moving average of the weights (0: the weights)
    precision: str = "auto"  # auto: bfloat16 autocast where a probe finds it faster, else float32
    features_memory_gb: float = 8.0  # hold the features in memory up to this size (per node, shared by its processes)

    @classmethod
    def from_config(cls, settings: Any) -> Settings:
        """Settings checked against the workflow's schema, so a bad value by hand reads as in the workflow."""
        check_section(settings, "train", "training settings")
        return cls(**settings)

    def model_config(self, vocab_size: int, num_locations: int, feature_dim: int) -> ModelConfig:
        return ModelConfig(vocab_size, num_locations, feature_dim, **{k: getattr(self, k) for k in MODEL_KEYS})
