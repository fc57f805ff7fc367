"""The training settings: one frozen dataclass of the workflow schema's `train` section.

Its fields carry no defaults and no help of their own: those are the schema's (config.schema.yaml, train),
so a setting is defined there once; a test checks that the fields and the schema's keys are the same.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from .config import check_section, schema_defaults
from .model import ModelConfig


@dataclass(frozen=True)
class Settings:
    """Training hyperparameters (config key `train`, merged with the model's own keys)."""

    attention: str
    embed_dim: int
    hidden_dim: int
    attention_dim: int
    dropout: float
    optimizer: str
    learning_rate: float
    lr_decay: float
    batch_size: int
    max_epochs: int
    patience: int
    select_on: str
    clip_norm: float | None
    alpha_c: float
    lambda_r: float
    lambda_e: float
    semi_sampling_p: float
    baseline: str
    baseline_decay: float
    reward_to_go: bool
    self_critical_epochs: int
    self_critical_learning_rate: float
    self_critical_samples: int
    self_critical_batch_size: int
    max_decode_length: int
    val_beam_size: int
    val_images: int | None
    decode_batch_size: int
    ema_decay: float
    precision: str
    features_memory_gb: float

    @classmethod
    def from_config(cls, settings: Any) -> Settings:
        """Settings checked as the workflow checks them, with the schema's default for each key left out."""
        check_section(settings, "train", "training settings")
        return cls(**(schema_defaults("train") | settings))

    def model_config(self, vocab_size: int, num_locations: int, feature_dim: int) -> ModelConfig:
        """The captioner's shape: the data's sizes, and the settings that are ModelConfig fields."""
        model_keys = [f.name for f in fields(ModelConfig) if f.name in self.__dataclass_fields__]
        return ModelConfig(vocab_size, num_locations, feature_dim, **{k: getattr(self, k) for k in model_keys})
