"""The encoder's inference backends: ``onnx-int8`` (ONNX Runtime) against the float PyTorch model, its export saved
in the pipeline, rebuilt when the weights change, and the fallback when onnxruntime is missing."""

from __future__ import annotations

import importlib.util
import sys
import warnings

import numpy as np
import pytest
import spacy
import torch

from pipeline.components.assembly import base_config
from pipeline.components.encoder import (DEFAULT_ENCODER, BackendFallbackWarning, EncoderSettings,
                                         TransformerEncoder, backend_override, resolve_model_path)
from pipeline.components.onnx_backend import ONNX_META_FILE, ONNX_MODEL_FILE, OnnxInt8Model
from pipeline.components.pipes import RANKER
from pipeline.errors import ConfigError

HAS_ORT = all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))
needs_ort = pytest.mark.skipif(not HAS_ORT, reason='onnxruntime is an optional extra: pip install ".[fast]"')
SENTENCES = [
    "You will keep the ward's patient files in order.",
    "Experience with postgresql is essential.",
    "Manage the team's budget and report to the finance director.",
    "Strong communication skills and a degree in computer science.",
    "You will administer medication to patients and monitor their condition.",
]
ONNX = backend_override("onnx-int8")


def top(scores: np.ndarray, k: int) -> list:
    return [list(np.argsort(-row)[:k]) for row in scores]


@pytest.fixture(scope="module")
def model_path():
    return resolve_model_path(DEFAULT_ENCODER)


@pytest.fixture(scope="module")
def onnx_nlp(pipeline_dir):
    if not HAS_ORT:
        pytest.skip('onnxruntime is an optional extra: pip install ".[fast]"')
    return spacy.load(pipeline_dir, config=ONNX)


@needs_ort
def test_onnx_int8_ranks_the_skills_like_the_float_encoder(pipeline_nlp, onnx_nlp):
    exact, fast = pipeline_nlp.get_pipe(RANKER), onnx_nlp.get_pipe(RANKER)
    assert fast.encoder.settings.backend == "onnx-int8"
    cosines = (exact.encoder.encode(SENTENCES) * fast.encoder.encode(SENTENCES)).sum(axis=1)
    assert cosines.min() > 0.98  # per-channel int8 stays this close (PyTorch's own int8 path: > 0.9)
    exact_scores, fast_scores = exact.score_texts(SENTENCES), fast.score_texts(SENTENCES)
    for want, got in zip(top(exact_scores, 5), top(fast_scores, 5)):
        assert got[0] == want[0] and len(set(got) & set(want)) >= 4
    assert np.abs(exact_scores - fast_scores).mean() < 0.01  # over all 13,896 skills


@needs_ort
def test_a_saved_pipeline_carries_its_export_and_runs_it_without_exporting(tmp_path, onnx_nlp, monkeypatch):
    expected = onnx_nlp.get_pipe(RANKER).encoder.encode(SENTENCES)
    onnx_nlp.to_disk(tmp_path / "fast")
    encoder_dir = tmp_path / "fast" / RANKER / "encoder"
    assert (encoder_dir / ONNX_MODEL_FILE).exists() and (encoder_dir / ONNX_META_FILE).exists()

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the saved export matches the weights")

    monkeypatch.setattr(OnnxInt8Model, "export", no_export)
    reloaded = spacy.load(tmp_path / "fast")  # the saved config says onnx-int8
    assert reloaded.get_pipe(RANKER).encoder.settings.backend == "onnx-int8"
    np.testing.assert_allclose(reloaded.get_pipe(RANKER).encoder.encode(SENTENCES), expected, atol=1e-6)


@pytest.mark.heavy  # 4 s or more: make test, not make test-fast
@needs_ort
def test_changed_weights_are_exported_again_in_memory_and_on_disk(tmp_path, model_path):
    encoder = TransformerEncoder(model_path, EncoderSettings(backend="onnx-int8"))
    before = encoder.encode(SENTENCES)
    encoder.save(tmp_path / "saved")
    with torch.no_grad():  # what an optimizer step does: weights change in place
        for param in encoder.model.parameters():
            param.mul_(1.05)
    after = encoder.encode(SENTENCES)
    exact = TransformerEncoder(model_path, EncoderSettings())
    exact.model.load_state_dict(encoder.model.state_dict())
    float_after = exact.encode(SENTENCES)
    assert not np.allclose(before, after, atol=1e-3)
    assert (after * float_after).sum(axis=1).min() > 0.98  # the new export follows the new weights

    encoder.model.save_pretrained(str(tmp_path / "saved"), safe_serialization=True)  # the old export stays beside
    with pytest.warns(UserWarning, match="exported from other weights"):
        reloaded = TransformerEncoder(tmp_path / "saved", EncoderSettings(backend="onnx-int8")).encode(SENTENCES)
    np.testing.assert_allclose(reloaded, after, atol=1e-5)


def test_without_onnxruntime_the_float_model_runs_with_a_warning(model_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime → ImportError
    exact = TransformerEncoder(model_path, EncoderSettings()).encode(SENTENCES[:2])
    encoder = TransformerEncoder(model_path, EncoderSettings(backend="onnx-int8"))
    with pytest.warns(BackendFallbackWarning, match=r'onnxruntime is not installed \(pip install "\.\[fast\]"\)'):
        fallback = encoder.encode(SENTENCES[:2])
    np.testing.assert_allclose(fallback, exact, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendFallbackWarning)  # said once, not per batch
        encoder.encode(SENTENCES[2:])


@pytest.mark.parametrize("encoder, message", [
    ({"backend": "onnx"}, r"\[components.esco_skill_ranker.encoder\] backend must be 'torch' or 'onnx-int8', "
                          r"got 'onnx'"),
    ({"max_length": 0}, r"\[components.esco_skill_ranker.encoder\] max_length must be >= 1, got 0"),
    ({"batch_size": "64"}, r"\[components.esco_skill_ranker.encoder\] batch_size: input should be a valid integer"),
])
def test_a_bad_encoder_setting_names_the_key(esco_path, encoder, message):
    config = base_config().merge({"components": {RANKER: {"encoder": encoder}}, "paths": {"esco": str(esco_path)}})
    with pytest.raises(ConfigError, match=message):
        spacy.util.load_model_from_config(config, auto_fill=True)
