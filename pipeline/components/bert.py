"""BERT's encoder in plain PyTorch and its fast tokenizer, read from a Hugging Face folder without transformers.

Why: importing transformers' BERT module pulls in ``torch._dynamo``, ``torch.distributed.tensor`` and the
generation utilities — 2 to 3 seconds of every process's start (issue #21: every CLI call, Ray actor, server and
packaged model paid it) — for a forward pass of forty lines. This module loads the same files
(``config.json``, ``model.safetensors``, ``tokenizer.json``) with ``safetensors`` and ``tokenizers``, which
transformers itself reads them with, and names its parameters as transformers' ``BertModel`` does: the state dict
(names, order, bytes) is the same, so weights, fingerprints and saved int8 exports pass between the two unchanged,
and a folder this module saves loads in transformers.

What it does not cover — another architecture, relative position embeddings, an activation other than GELU/ReLU,
a folder without ``tokenizer.json`` — ``supports`` reports, and the encoder falls back to transformers.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
# What transformers' tokenizer also writes and reads; copied along so the saved folder loads there too.
TOKENIZER_SIDE_FILES = ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
ACTIVATIONS = {"gelu": nn.functional.gelu, "relu": nn.functional.relu,
               "gelu_new": lambda x: nn.functional.gelu(x, approximate="tanh")}
DROPPED_KEYS = ("embeddings.position_ids",)  # a buffer older transformers versions saved; rebuilt here


@dataclass(frozen=True)
class BertConfig:
    """The keys of a BERT ``config.json`` the forward pass reads (the file itself is kept whole for saving)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0

    @classmethod
    def from_dict(cls, values: dict) -> "BertConfig":
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


def supports(path: Union[str, Path]) -> Optional[str]:
    """None when ``path`` holds a model this module runs exactly as transformers would; else why not."""
    path = Path(path)
    for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE):
        if not (path / name).exists():
            return f"no {name}"
    config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    if config.get("model_type") != "bert":
        return f"model_type {config.get('model_type')!r} is not 'bert'"
    if config.get("position_embedding_type", "absolute") != "absolute":
        return f"position_embedding_type {config.get('position_embedding_type')!r}"
    if config.get("hidden_act", "gelu") not in ACTIVATIONS:
        return f"hidden_act {config.get('hidden_act')!r}"
    if config.get("is_decoder") or config.get("add_cross_attention"):
        return "a decoder"
    missing = [f.name for f in fields(BertConfig) if f.default is MISSING and f.name not in config]
    if missing:
        return f"config.json lacks {', '.join(missing)}"
    return _normalizer_disagreement(path)


# tokenizer_config.json keys transformers' BERT tokenizer applies over tokenizer.json's normalizer when they differ
NORMALIZER_KEYS = {"do_lower_case": "lowercase", "strip_accents": "strip_accents",
                   "tokenize_chinese_chars": "handle_chinese_chars"}


def _normalizer_disagreement(path: Path) -> Optional[str]:
    """Why transformers would tokenize this folder otherwise than its tokenizer.json alone, or None."""
    wanted = _tokenizer_config(path)
    if not wanted:
        return None
    normalizer = json.loads((path / TOKENIZER_FILE).read_text(encoding="utf-8")).get("normalizer") or {}
    if normalizer.get("type") != "BertNormalizer":
        return f"tokenizer.json's normalizer is {normalizer.get('type')!r}, not BertNormalizer"
    for key, field_name in NORMALIZER_KEYS.items():
        if key in wanted and wanted[key] != normalizer.get(field_name):
            return f"tokenizer_config.json {key}={wanted[key]!r} differs from tokenizer.json's {normalizer.get(field_name)!r}"
    return None


class BertOutput(NamedTuple):
    """What transformers' model returns, as far as this project reads it."""

    last_hidden_state: torch.Tensor


class _Config:
    """``model.config`` as callers read it (``hidden_size``, ...): the config.json values as attributes."""

    def __init__(self, values: dict):
        self.__dict__.update(values)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class BertEmbeddings(nn.Module):
    """The tables start uninitialized (``_weight``): ``BertModel.from_pretrained`` fills every one or fails, and
    drawing 12M random numbers first costs a tenth of a second of each start (the meta device would pull in
    ``torch._dynamo``)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        table = lambda rows: torch.empty(rows, config.hidden_size)  # noqa: E731
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id,
                                            _weight=table(config.vocab_size))
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size,
                                                _weight=table(config.max_position_embeddings))
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size,
                                                  _weight=table(config.type_vocab_size))
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        embeddings = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"hidden_size {config.hidden_size} is not a multiple of num_attention_heads "
                             f"{config.num_attention_heads}")
        self.heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden.shape
        split = lambda x: x.view(batch, length, self.heads, -1).transpose(1, 2)  # noqa: E731 - [B, H, T, d]
        context = nn.functional.scaled_dot_product_attention(
            split(self.query(hidden)), split(self.key(hidden)), split(self.value(hidden)), attn_mask=key_mask,
            dropout_p=self.dropout.p if self.training else 0.0, scale=1.0 / math.sqrt(width // self.heads),
        )
        return context.transpose(1, 2).reshape(batch, length, width)


class BertResidual(nn.Module):
    """Dense, dropout, then LayerNorm over the sum with the block's input (transformers' ``BertSelfOutput`` and
    ``BertOutput``, the same three parameters)."""

    def __init__(self, config: BertConfig, width_in: int):
        super().__init__()
        self.dense = nn.Linear(width_in, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertResidual(config, config.hidden_size)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(hidden, key_mask), hidden)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACTIVATIONS[config.hidden_act]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden))


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertResidual(config, config.intermediate_size)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        attended = self.attention(hidden, key_mask)
        return self.output(self.intermediate(attended), attended)


class BertStack(nn.Module):
    """The layers, under transformers' names (``encoder.layer.N``); ``BertModel.forward`` runs them."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


class BertPooler(nn.Module):
    """Kept for its two parameters only (the state dict stays transformers'); the project pools itself."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)


class BertModel(nn.Module):
    """``BertModel``'s last hidden states: ``model(input_ids=..., attention_mask=..., token_type_ids=...)``."""

    def __init__(self, config_values: dict, pooler: bool = True):
        super().__init__()
        self.config = _Config(config_values)
        bert = BertConfig.from_dict(config_values)
        self.embeddings = BertEmbeddings(bert)
        self.encoder = BertStack(bert)
        self.pooler = BertPooler(bert) if pooler else None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None) -> BertOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        key_mask = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, T]: padding is never attended to
        hidden = self.embeddings(input_ids, token_type_ids)
        for layer in self.encoder.layer:
            hidden = layer(hidden, key_mask)
        return BertOutput(hidden)

    @classmethod
    def from_pretrained(cls, path: Union[str, Path]) -> "BertModel":
        """The weights of ``path`` (a transformers folder); a missing or misshapen weight is an error, not a random
        initialization."""
        from safetensors.torch import load_file

        path = Path(path)
        state = {key.removeprefix("bert."): value for key, value in load_file(str(path / WEIGHTS_FILE)).items()
                 if key.removeprefix("bert.") not in DROPPED_KEYS}
        model = cls(json.loads((path / CONFIG_FILE).read_text(encoding="utf-8")),
                    pooler=any(key.startswith("pooler.") for key in state))
        own = model.state_dict()
        state = {key: value for key, value in state.items() if key in own}  # heads of other tasks are not ours
        missing = sorted(set(own) - set(state))
        if missing:
            raise ValueError(f"{path / WEIGHTS_FILE} lacks {len(missing)} BERT weights, e.g. {missing[:3]}")
        model.load_state_dict(state)
        return model.eval()

    def save_pretrained(self, path: Union[str, Path], safe_serialization: bool = True) -> None:
        """``config.json`` and ``model.safetensors``, as transformers writes them."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2, sort_keys=True) + "\n",
                                        encoding="utf-8")
        save_file({key: value.detach().contiguous() for key, value in self.state_dict().items()},
                  str(path / WEIGHTS_FILE), metadata={"format": "pt"})


class Batch(dict):
    """A tokenized batch: tensors by name, movable to a device in place (as transformers' ``BatchEncoding``)."""

    def to(self, device: Union[str, torch.device]) -> "Batch":
        for key, value in self.items():
            self[key] = value.to(device)
        return self


class FastTokenizer:
    """The ``tokenizer.json`` of a folder through the ``tokenizers`` library: batches padded to their longest
    text, truncated to ``max_length``, with the special tokens the file's post-processor adds ([CLS] ... [SEP])."""

    model_input_names = ["input_ids", "token_type_ids", "attention_mask"]

    def __init__(self, path: Union[str, Path]):
        from tokenizers import Tokenizer

        self.path = Path(path)
        self.backend = Tokenizer.from_file(str(self.path / TOKENIZER_FILE))
        self.backend.no_truncation()
        special = _special_tokens(self.path)
        self.model_max_length: int = int(_tokenizer_config(self.path).get("model_max_length", 512))
        self.mask_token: str = special.get("mask_token", "[MASK]")
        self.pad_token: str = special.get("pad_token", "[PAD]")
        pad_id = self.backend.token_to_id(self.pad_token)
        self.backend.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token=self.pad_token)

    def __call__(self, texts: Sequence[str], padding: bool = True, truncation: bool = False,
                 max_length: Optional[int] = None, return_tensors: str = "pt",
                 return_offsets_mapping: bool = False, return_special_tokens_mask: bool = False) -> Batch:
        """The arguments transformers' tokenizers take, for the calls this project makes (padding to the longest
        text, truncation to ``max_length`` or else the model's ``model_max_length``, PyTorch tensors). The
        truncation is set on the shared Rust tokenizer per call: one call at a time per tokenizer (the server
        serializes requests, Ray actors are processes)."""
        if return_tensors != "pt" or not padding:
            raise ValueError("FastTokenizer returns padded PyTorch batches only")
        if truncation:
            self.backend.enable_truncation(max_length or self.model_max_length)
        else:
            self.backend.no_truncation()
        encodings = self.backend.encode_batch(list(texts))
        batch = Batch(
            input_ids=torch.tensor([e.ids for e in encodings], dtype=torch.long),
            token_type_ids=torch.tensor([e.type_ids for e in encodings], dtype=torch.long),
            attention_mask=torch.tensor([e.attention_mask for e in encodings], dtype=torch.long),
        )
        if return_offsets_mapping:
            batch["offset_mapping"] = torch.tensor([e.offsets for e in encodings], dtype=torch.long)
        if return_special_tokens_mask:
            batch["special_tokens_mask"] = torch.tensor([e.special_tokens_mask for e in encodings], dtype=torch.long)
        return batch

    def save_pretrained(self, path: Union[str, Path]) -> None:
        """``tokenizer.json`` (as loaded: no padding or truncation baked in) and the side files beside it."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if path.resolve() == self.path.resolve():
            return
        shutil.copyfile(self.path / TOKENIZER_FILE, path / TOKENIZER_FILE)
        for name in TOKENIZER_SIDE_FILES:
            if (self.path / name).exists():
                shutil.copyfile(self.path / name, path / name)


def _tokenizer_config(path: Path) -> dict:
    config_file = path / "tokenizer_config.json"
    return json.loads(config_file.read_text(encoding="utf-8")) if config_file.exists() else {}


def _special_tokens(path: Path) -> Dict[str, str]:
    """The named special tokens (mask, pad, ...) from tokenizer_config.json / special_tokens_map.json."""
    found: Dict[str, str] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (path / name).exists():
            values = json.loads((path / name).read_text(encoding="utf-8"))
            for key, value in values.items():
                if key.endswith("_token") and key not in found:
                    token = value.get("content") if isinstance(value, dict) else value
                    if isinstance(token, str):
                        found[key] = token
    return found


def load(path: Union[str, Path]) -> Tuple[BertModel, FastTokenizer]:
    """The model and tokenizer of ``path`` (``supports(path)`` must be None)."""
    return BertModel.from_pretrained(path), FastTokenizer(path)
