"""The ``[training]`` section: the loop's settings, each bounded by its type hint, and the device to train on."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, Dict, Literal, Tuple, get_type_hints

import torch

from pipeline.errors import ConfigError
from pipeline.constraints import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    Probability,
    check_value,
    confloat,
    conint,
)

SECTION = "training"
SUBSECTIONS = ("negatives", "supervision")  # resolved through registries, not settings of the loop
DEVICE_PATTERN = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


@dataclass
class TrainingSettings:
    """The ``[training]`` section. Every key is checked up front against its hint; errors name the key."""

    max_steps: PositiveInt = 500
    batch_size: conint(ge=2) = 32  # in-batch negatives need a second example
    learning_rate: confloat(ge=0.0, le=1.0) = 3e-5
    warmup_steps: NonNegativeInt = 50
    weight_decay: confloat(ge=0.0, le=1.0) = 0.01
    temperature: confloat(ge=1e-4, le=10.0) = 0.05
    mask_probability: Probability = 0.0
    eval_every: PositiveInt = 100
    patience: NonNegativeInt = 3  # 0 = no early stopping
    max_minutes: NonNegativeFloat = 60.0  # 0 = no time budget
    max_grad_norm: NonNegativeFloat = 1.0  # 0 = no clipping
    torch_threads: NonNegativeInt = 0  # 0 = PyTorch's default
    device: str = "cpu"  # "cpu" | "cuda" | "cuda:N" | "auto" (CUDA when there is one)
    # Development signals (pipeline/evaluation/dev_signals.py) scored at every evaluation; sizes of each signal.
    dev_signals: bool = False
    dev_max_masked: NonNegativeInt = 1500
    dev_max_paraphrases: NonNegativeInt = 2000
    # What model selection maximizes: "benchmark" = mean RP@5 of the validation files; "combined" = the mean
    # RP@5 of the benchmark files (together), the masked-mention dev and the ESCO paraphrase dev.
    selection: Literal["benchmark", "combined"] = "benchmark"
    # Weight-space interpolation toward the untrained encoder (WiSE-FT): after training, each alpha gives
    # weights (1 - alpha) * untrained + alpha * best; the one that scores best is kept. (1.0,) = off.
    interpolation: Tuple[float, ...] = (1.0,)

    @classmethod
    def from_section(cls, section: Dict[str, Any]) -> "TrainingSettings":
        hints = get_type_hints(cls, include_extras=True)
        known = [f.name for f in fields(cls)]
        values: Dict[str, Any] = {}
        for key, value in section.items():
            if key in SUBSECTIONS:
                continue
            if key not in hints:
                raise ConfigError(f"[{SECTION}] unknown key '{key}'; known keys: {sorted(known + list(SUBSECTIONS))}")
            check_value(SECTION, key, value, hints[key])
            values[key] = float(value) if isinstance(cls.__dataclass_fields__[key].default, float) else value
        if "interpolation" in values:
            values["interpolation"] = check_alphas(values["interpolation"])
        settings = cls(**values)
        check_device_name(settings.device)
        return settings


def check_alphas(value: Any) -> Tuple[float, ...]:
    """A non-empty list of interpolation weights in (0, 1]; 1.0 is the trained encoder itself."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items or any(isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 < a <= 1.0 for a in items):
        raise ConfigError(f"[{SECTION}] interpolation must be a list of weights in (0, 1], e.g. [0.5, 1.0]; "
                          f"got {value!r}")
    return tuple(float(a) for a in items)


def check_device_name(name: Any) -> None:
    if not isinstance(name, str) or not DEVICE_PATTERN.match(name):
        raise ConfigError(f'[{SECTION}] device must be "cpu", "cuda", "cuda:N" or "auto", got {name!r}')


def resolve_device(name: str) -> torch.device:
    """The torch device ``[training] device`` asks for; asking for CUDA on a machine without it is a config error
    (raised before any work, not as a CUDA error minutes into the run)."""
    check_device_name(name)
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
