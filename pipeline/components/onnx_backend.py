"""The ``onnx-int8`` encoder backend: the float encoder exported to ONNX, its MatMul weights quantized to int8
(per output channel), run by ONNX Runtime on the CPU.

Why this path: on 2 CPU cores the sentence encoder is most of the pipeline's time. PyTorch's dynamic int8
quantization of the Linear layers gave 1.48x (since removed: this backend superseded it); ONNX Runtime fuses the
graph and runs int8 GEMMs (VNNI where the CPU has it), which is where the rest of the gain is (``make bench``).
Per-channel weight scales keep the embeddings far closer to the float ones than one scale per tensor;
``reduce_range`` (7-bit weights) avoids the int16 saturation of CPUs without VNNI at no measurable cost in accuracy.

The exported model is a derived artifact of the float weights, so it records their fingerprint (the encoder's
``weights_fingerprint``): a saved file is used only when the fingerprint matches the weights beside it, otherwise
it is exported again (with a warning). onnxruntime and onnx are an optional extra (``pip install ".[fast]"``); the
caller falls back to PyTorch when they are missing (``runtime_missing``).
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Mapping, Optional, Sequence

import numpy as np
import torch

from pipeline.errors import OnnxExportError

ONNX_MODEL_FILE = "model.int8.onnx"
ONNX_META_FILE = "model.int8.json"
OPSET = 17
OUTPUT_NAME = "last_hidden_state"
EXPORT_TOLERANCE = 1e-3  # max |float ONNX - PyTorch| on the check batch; more means the trace went wrong
# A padded batch to trace with (so the attention-mask branch is the one recorded) and another to check with.
TRACE_TEXTS = ("a short line", "a longer line of a job ad, so that the batch has padding in it")
CHECK_TEXTS = ("You will keep the ward's patient files in order.", "Python", "manage budgets and lead a team " * 6)


def runtime_missing(export: bool = True) -> Optional[str]:
    """Why the backend cannot run here (a package to install), or None when it can.

    ``export``: also needs what exporting and quantizing take (onnx), not only running a saved model."""
    needed = ("onnxruntime", "onnx") if export else ("onnxruntime",)
    for module in needed:
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install \".[fast]\")"
    return None


class _LastHiddenState(torch.nn.Module):
    """Positional inputs → ``last_hidden_state`` (what the exporter traces; HF models take keywords)."""

    def __init__(self, model: torch.nn.Module, input_names: Sequence[str]):
        super().__init__()
        self.model, self.input_names = model, list(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, inputs))).last_hidden_state


class OnnxInt8Model:
    """An ONNX Runtime session over the int8 model; called like the float model on a tokenized batch."""

    def __init__(self, model_bytes: bytes, input_names: Sequence[str], fingerprint: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the CPUs this process was given (Ray sets it)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self.model_bytes, self.input_names, self.fingerprint = model_bytes, list(input_names), fingerprint

    def __call__(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """[B, T, D] float32 on the CPU."""
        feeds = {name: batch[name].detach().cpu().numpy().astype(np.int64) for name in self.input_names}
        return torch.from_numpy(self.session.run([OUTPUT_NAME], feeds)[0])

    # ------------------------------------------------------------------ making one
    @classmethod
    def export(cls, model: torch.nn.Module, tokenizer: Any, fingerprint: str) -> "OnnxInt8Model":
        """Trace a CPU copy of the float model, check the float export against PyTorch, quantize it."""
        from onnxruntime.quantization import QuantType, quantize_dynamic

        source = copy.deepcopy(model).cpu().eval()  # exporting must not touch the live model (device, train mode)
        sample = tokenizer(list(TRACE_TEXTS), padding=True, return_tensors="pt")
        names = [name for name in tokenizer.model_input_names if name in sample]
        with tempfile.TemporaryDirectory(prefix="esco-onnx-") as tmp:
            float_path, int8_path = Path(tmp) / "model.onnx", Path(tmp) / ONNX_MODEL_FILE
            with torch.inference_mode(), warnings.catch_warnings():
                # The tracer warns about Python branches it freezes; the padded trace batch takes the masked one,
                # and the check below proves the export right on another shape.
                warnings.simplefilter("ignore")
                torch.onnx.export(_LastHiddenState(source, names).eval(), tuple(sample[n] for n in names),
                                  str(float_path), input_names=names, output_names=[OUTPUT_NAME],
                                  dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names + [OUTPUT_NAME]},
                                  opset_version=OPSET, dynamo=False)
            _check_export(float_path, source, tokenizer, names)
            with _quiet_root_logger():  # onnxruntime logs a pre-processing hint to the root logger
                quantize_dynamic(str(float_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True,
                                 reduce_range=True, op_types_to_quantize=["MatMul"],
                                 extra_options={"DefaultTensorType": 1})  # 1 = FLOAT, for shape-less MatMuls
            return cls(int8_path.read_bytes(), names, fingerprint)

    # ------------------------------------------------------------------ serialization
    def to_disk(self, folder: Path) -> None:
        import onnxruntime as ort

        folder.mkdir(parents=True, exist_ok=True)
        (folder / ONNX_MODEL_FILE).write_bytes(self.model_bytes)
        meta = {"source_weights_sha256": self.fingerprint, "input_names": self.input_names, "opset": OPSET,
                "quantization": "dynamic int8, MatMul weights per channel, reduce_range",
                "onnxruntime": ort.__version__}
        (folder / ONNX_META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def from_disk(cls, folder: Path, fingerprint: str) -> Optional["OnnxInt8Model"]:
        """The saved model when it was exported from these weights; None when there is none or it is stale."""
        model_path, meta_path = folder / ONNX_MODEL_FILE, folder / ONNX_META_FILE
        if not model_path.exists() or not meta_path.exists():
            return None
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("source_weights_sha256") != fingerprint:
            warnings.warn(f"'{model_path}' was exported from other weights than those in '{folder}': exporting "
                          "again (save the pipeline to keep the new export).", UserWarning, stacklevel=2)
            return None
        return cls(model_path.read_bytes(), meta["input_names"], fingerprint)


def _check_export(path: Path, model: torch.nn.Module, tokenizer: Any, names: List[str]) -> None:
    import onnxruntime as ort

    batch = tokenizer(list(CHECK_TEXTS), padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.inference_mode():
        expected = model(**{n: batch[n] for n in names}).last_hidden_state.numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {n: batch[n].numpy().astype(np.int64) for n in names})[0]
    mask = batch["attention_mask"].numpy().astype(bool)  # padded positions carry no meaning
    error = float(np.abs(got - expected)[mask].max())
    if error > EXPORT_TOLERANCE:
        raise OnnxExportError(f"the ONNX export differs from the PyTorch encoder by {error:.2e} (> "
                              f"{EXPORT_TOLERANCE}) on a check batch; use backend = \"torch\"")


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    level = logging.root.level
    logging.root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logging.root.setLevel(level)
