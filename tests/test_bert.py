"""The project's own BERT (pipeline/components/bert.py) against transformers' on the shipped encoder: the same word
pieces, offsets and hidden states on real job-ad lines and ESCO labels, the same state dict, files either side
loads, and a clear refusal of what it does not run."""

from __future__ import annotations

import gzip
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.components import bert
from pipeline.components.encoder import EncoderSettings, TransformerEncoder, load_backbone, resolve_model_path

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ODD_TEXTS = ["", " ", "C# and .NET", "Ärzte für Säuglinge — naïve café", "日本語のテキスト", "word " * 400,
             "manage the consultants' diaries", "\u200b\ufeffzero width", "a\tb\nc"]


@pytest.fixture(scope="module")
def model_path() -> Path:
    return resolve_model_path(MODEL)


@pytest.fixture(scope="module")
def texts(shared_path, taxonomy) -> list:
    """Lines of real ads (HTML and all) and ESCO labels, with the odd cases above."""
    lines = []
    with gzip.open(shared_path / "jobads" / "tech_and_general_jobs.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in itertools.islice(handle, 120):
            lines += [x for x in (json.loads(line).get("description") or "").split("\n") if x.strip()][:4]
    labels = [skill.preferred_label for skill in itertools.islice(taxonomy.skills.values(), 0, 13896, 97)]
    return lines + labels + ODD_TEXTS


@pytest.fixture(scope="module")
def reference(model_path):
    from transformers import AutoModel, AutoTokenizer

    return (AutoModel.from_pretrained(str(model_path), local_files_only=True).eval(),
            AutoTokenizer.from_pretrained(str(model_path), local_files_only=True))


def test_the_shipped_encoder_runs_on_the_own_bert(model_path):
    assert bert.supports(model_path) is None
    model, tokenizer = load_backbone(model_path)
    assert isinstance(model, bert.BertModel) and isinstance(tokenizer, bert.FastTokenizer)
    assert tokenizer.mask_token == "[MASK]" and model.config.hidden_size == 384


@pytest.mark.parametrize("truncation,max_length", [(True, 128), (True, 32), (True, 8), (True, None), (False, None)])
def test_word_pieces_offsets_and_masks_equal_transformers(model_path, reference, texts, truncation, max_length):
    tokenizer = bert.FastTokenizer(model_path)
    for start in range(0, len(texts), 64):
        chunk = texts[start : start + 64]
        ours = tokenizer(chunk, truncation=truncation, max_length=max_length, return_offsets_mapping=True,
                         return_special_tokens_mask=True)
        theirs = reference[1](chunk, padding=True, truncation=truncation, max_length=max_length, return_tensors="pt",
                              return_offsets_mapping=True, return_special_tokens_mask=True)
        assert set(ours) == set(theirs)
        for key in theirs:
            assert torch.equal(ours[key], theirs[key]), (key, start)


def test_hidden_states_and_state_dict_equal_transformers(model_path, reference, texts):
    model, tokenizer = bert.load(model_path)
    assert list(model.state_dict()) == list(reference[0].state_dict())  # names and order: same fingerprints
    with torch.inference_mode():
        for start in range(0, len(texts), 64):
            batch = tokenizer(texts[start : start + 64], truncation=True, max_length=128)
            mask = batch["attention_mask"].bool()
            ours = model(**batch).last_hidden_state[mask]
            theirs = reference[0](**batch).last_hidden_state[mask]
            assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()


def test_training_mode_draws_the_same_dropout(model_path, reference):
    """Dropout in the same places and order: a training run gives the weights it gave on transformers."""
    model, tokenizer = bert.load(model_path)
    batch = tokenizer(["keep the ward's patient files in order", "SQL"], truncation=True, max_length=32)
    model.train(), reference[0].train()
    try:
        torch.manual_seed(7)
        ours = model(**batch).last_hidden_state
        torch.manual_seed(7)
        theirs = reference[0](**batch).last_hidden_state
    finally:
        reference[0].eval()
    assert torch.allclose(ours, theirs, atol=1e-5)
    ours.sum().backward()
    assert model.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def test_saved_folder_loads_in_transformers_and_back(model_path, reference, tmp_path):
    model, tokenizer = bert.load(model_path)
    with torch.no_grad():
        model.encoder.layer[0].output.dense.bias.add_(0.5)  # a change that must survive both ways
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    from transformers import AutoModel

    theirs = AutoModel.from_pretrained(str(tmp_path), local_files_only=True)
    assert torch.equal(theirs.encoder.layer[0].output.dense.bias, model.encoder.layer[0].output.dense.bias)
    again, tokenizer_again = bert.load(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    assert torch.equal(tokenizer_again(["SQL Server"])["input_ids"], tokenizer(["SQL Server"])["input_ids"])


def test_what_it_does_not_run_falls_back_or_fails_clearly(model_path, tmp_path):
    folder = tmp_path / "other"
    shutil.copytree(model_path, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "position_embedding_type": "relative_key"}))
    assert "relative_key" in bert.supports(folder)
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "roberta"}))
    assert "roberta" in bert.supports(folder)
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**tokenizer_config, "do_lower_case": False}))
    assert "do_lower_case" in bert.supports(folder)  # transformers would re-case what tokenizer.json lower-cases
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    assert bert.supports(folder) is None
    (folder / "tokenizer.json").unlink()
    assert bert.supports(folder) == "no tokenizer.json"  # transformers builds it from vocab.txt instead
    model, _ = load_backbone(folder)
    assert not isinstance(model, bert.BertModel)

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(model_path, broken)
    weights = load_file(str(broken / "model.safetensors"))
    del weights["encoder.layer.5.output.dense.weight"]
    save_file(weights, str(broken / "model.safetensors"))
    with pytest.raises(ValueError, match="lacks 1 BERT weights"):
        bert.load(broken)


def test_loading_a_pipeline_encoder_imports_no_transformers(model_path):
    """The point of bert.py: an encoder loads without transformers' seconds of imports (issue #21)."""
    code = ("import sys; from pipeline.components.encoder import TransformerEncoder, EncoderSettings; "
            f"TransformerEncoder({str(model_path)!r}, EncoderSettings()).encode(['SQL']); "
            "print(sorted(m for m in ('transformers', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


@pytest.mark.slow  # make test-all: the hidden states test above covers it
def test_encoder_vectors_unchanged_by_the_backbone(model_path, reference, texts):
    """The encoder's sentence vectors on the own BERT equal those on transformers' model."""
    encoder = TransformerEncoder(model_path, EncoderSettings())
    ours = encoder.encode(texts[:100])
    encoder.model, encoder.tokenizer = reference
    theirs = encoder.encode(texts[:100])
    assert abs(ours - theirs).max() < 1e-5
