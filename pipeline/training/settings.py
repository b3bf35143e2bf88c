"""The ``[training]`` section: the loop's settings, their shipped defaults and bounds, and the device to train on.

The defaults here are what the recipes train with: ``configs/base.cfg`` names only what differs (the positive
sources), and an overlay only its negatives and what else it changes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Mapping, Tuple

import torch
from pydantic import field_validator

from pipeline.components.ranker import SkillTextMode
from pipeline.errors import ConfigError
from pipeline.settings import Field, Settings, StrictBool, StrictFloat, StrictInt, StrictStr

SECTION = "training"
SUBSECTIONS = ("negatives", "supervision")  # resolved through registries, not settings of the loop
DEVICE_PATTERN = r"^(cpu|auto|cuda(:\d+)?)$"
Alpha = Annotated[StrictFloat, Field(gt=0.0, le=1.0)]


class TrainingSettings(Settings):
    """The ``[training]`` section. Every key is checked up front; errors name the key."""

    max_steps: StrictInt = Field(200, ge=1)
    batch_size: StrictInt = Field(32, ge=2)  # in-batch negatives need a second example
    learning_rate: StrictFloat = Field(3e-5, ge=0.0, le=1.0)
    warmup_steps: StrictInt = Field(30, ge=0)
    weight_decay: StrictFloat = Field(0.01, ge=0.0, le=1.0)
    temperature: StrictFloat = Field(0.05, ge=1e-4, le=10.0)
    mask_probability: StrictFloat = Field(0.0, ge=0.0, le=1.0)
    eval_every: StrictInt = Field(100, ge=1)
    patience: StrictInt = Field(2, ge=0)  # 0 = no early stopping
    max_minutes: StrictFloat = Field(60.0, ge=0.0)  # 0 = no time budget
    max_grad_norm: StrictFloat = Field(1.0, ge=0.0)  # 0 = no clipping
    torch_threads: StrictInt = Field(0, ge=0)  # 0 = PyTorch's default
    device: StrictStr = "cpu"  # "cpu" | "cuda" | "cuda:N" | "auto" (CUDA if any)
    # Development signals (pipeline/evaluation/dev_signals.py) scored at every evaluation; sizes of each signal.
    dev_signals: StrictBool = True
    dev_max_masked: StrictInt = Field(1500, ge=0)
    dev_max_paraphrases: StrictInt = Field(2000, ge=0)
    # What model selection maximizes: "benchmark" = RP@5 pooled over every sentence of the --validation files
    # (pooled/rp@5); "combined" = the mean of that, the masked-mention dev's and the ESCO paraphrase dev's RP@5.
    selection: Literal["benchmark", "combined"] = "benchmark"
    # Weight-space interpolation toward the untrained encoder (WiSE-FT): after training, each alpha gives
    # weights (1 - alpha) * untrained + alpha * best; the one that scores best is kept. (1.0,) = off.
    interpolation: Tuple[Alpha, ...] = Field((1.0,), min_length=1)
    # The skill texts the evaluations above rank against (selection, interpolation). The ranker's own skill_text
    # is embedded once, for the chosen weights, when training ends. Preferred labels: 13,896 texts to embed per
    # evaluation instead of ~99k with every alternative label — an index that would also hold the paraphrase
    # dev's held-out alternative labels verbatim.
    evaluation_skill_text: SkillTextMode = "preferred"

    @field_validator("device")
    @classmethod
    def _device_name(cls, device: str) -> str:
        if not re.fullmatch(DEVICE_PATTERN, device):
            raise ValueError('must be "cpu", "cuda", "cuda:N" or "auto"')
        return device

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> "TrainingSettings":
        """The loop's settings from a resolved ``[training]`` section (its sub-blocks are not loop settings)."""
        return cls.load(SECTION, {key: value for key, value in section.items() if key not in SUBSECTIONS})


def resolve_device(name: str) -> torch.device:
    """The torch device a checked ``[training] device`` asks for; asking for CUDA on a machine without it is a
    config error (raised before any work, not as a CUDA error minutes into the run)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f'[{SECTION}] device = "{name}" but PyTorch sees no CUDA device here '
                          f'(torch {torch.__version__}); use "cpu" or "auto"')
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f'[{SECTION}] device = "{name}" but there are {torch.cuda.device_count()} CUDA devices')
    return device
