"""`extract --engine ray`: a real local Ray (2 CPUs) over real ads from ../shared, a killed actor, a resumed run,
a poison ad that fails alone.

Skipped without Ray (an optional extra: pip install ".[ray]"), except the test of the message that says so.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import signal
import sys
import time
import warnings
from pathlib import Path

import bad_input
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bad_input import add_poison, ads_with_poison
from typer.testing import CliRunner

from pipeline.commands.cli import app
from pipeline.commands.extract import pipe_records
from pipeline.commands.ray_engine import (STREAM_BUFFER, TESTED_RAY, InputSpec, PipelineActor, RaySettings,
                                         SlowerStreamingWarning, data_context, extract_ray)
from pipeline.commands.ray_engine.read import READ_SCHEMA, read_blocks
from pipeline.errors import ConfigError
from pipeline.io.jobads import AdFormat, read_ads
from pipeline.io.text import BYTE_ORDER_MARK, CONTROL_CHARACTER

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason='Ray is an optional extra, not installed: pip install ".[ray]"')
N_TECH, N_NHS = 150, 150  # real ads; the NHS ones are HTML
BAD_LINES = [b"{not json", json.dumps({"id": "empty", "description": "  "}).encode()]


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def ray_local():
    """One local Ray with 2 CPUs for the module (extract_ray uses a running Ray instead of starting one)."""
    if not HAS_RAY:
        pytest.skip('Ray is an optional extra, not installed: pip install ".[ray]"')
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    ray.data.DataContext.get_current().enable_progress_bars = False
    # Test actors (below) travel to the workers by value: this module is not importable there, nor its helper.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.cloudpickle.register_pickle_by_value(bad_input)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def jobads(tmp_path_factory, shared_path):
    """Two real JSON Lines files (one with two bad lines) and a Parquet file: 300 + 40 ads, 2 + 1 rejects."""
    folder = tmp_path_factory.mktemp("ray_ads")
    tech = list(read_ads(shared_path / "jobads" / "tech_and_general_jobs.jsonl.gz", limit=N_TECH))
    nhs = list(read_ads(shared_path / "jobads" / "nhs_jobs_2020.jsonl.gz", limit=N_NHS))
    lines = [json.dumps({"id": ad.id, "description": ad.text}).encode() for ad in nhs]
    (folder / "tech.jsonl").write_bytes(b"".join(json.dumps({"id": ad.id, "description": ad.text}).encode() + b"\n"
                                                 for ad in tech))
    (folder / "nhs.jsonl").write_bytes(b"\n".join(lines[:50] + BAD_LINES + lines[50:]) + b"\n")
    rows = [{"id": ad.id, "description": ad.text} for ad in tech[:40]]
    rows[3]["id"] = None  # gets "<file>:<row>" as its id, like a JSON line without one
    rows.append({"id": "null-text", "description": None})  # rejected: not a string
    pq.write_table(pa.Table.from_pylist(rows), folder / "more.parquet")
    return {"jsonl": [folder / "tech.jsonl", folder / "nhs.jsonl"], "parquet": folder / "more.parquet",
            "ads": tech + nhs}


def ads_rows(out: Path) -> list:
    return pq.read_table(out / "ads").to_pylist()


def assert_each_ad_once(out: Path, n_ads: int) -> None:
    rows = ads_rows(out)
    keys = [(row["input"], row["seq"]) for row in rows]
    assert len(rows) == n_ads and len(set(keys)) == n_ads
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ads_out"] == n_ads and summary["balanced"]
    assert summary["ads_in"] == summary["ads_out"] + summary["failed"] + summary["rejected"]


# ------------------------------------------------------------------------------------------ a real run
@needs_ray
def test_ray_engine_writes_every_ad_once_with_the_single_engine_records(tmp_path, ray_local, matcher_dir,
                                                                         matcher_nlp, jobads):
    """The CLI on two real files; its actors log their load and batches (``--timeline``): ``--num-workers 2``
    loads the pipeline twice and both actors take batches."""
    out = tmp_path / "out"
    timeline = tmp_path / "timeline.jsonl"
    result = CliRunner().invoke(app, ["extract", str(matcher_dir), *map(str, jobads["jsonl"]), "--output", str(out),
                                      "--engine", "ray", "--num-workers", "2", "--batch-size", "16",
                                      "--timeline", str(timeline)])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in timeline.read_text().splitlines()]
    batches = [e for e in events if e["event"] == "batch"]
    assert sum(e["ads"] for e in batches) == N_TECH + N_NHS and "s to the first batch" in result.output
    actors = {e["actor"] for e in events if e["event"] == "load"}
    assert len(actors) == 2 and {e["actor"] for e in batches} == actors
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["ads_in"], summary["ads_out"], summary["rejected"]) == (N_TECH + N_NHS + 2, N_TECH + N_NHS, 2)
    assert summary["rejected_by_reason"] == {"malformed JSON": 1, "empty text field 'description'": 1}
    assert summary["extract"]["n_ads"] == N_TECH + N_NHS
    assert "302 ad(s) in = 300 written + 0 failed + 2 rejected" in result.output
    assert_each_ad_once(out, N_TECH + N_NHS)

    ads = pq.read_table(out / "ads")
    assert {name: str(ads.schema.field(name).type) for name in ("input", "seq", "id", "is_english",
                                                                "truncated_chars")} == {
        "input": "string", "seq": "int64", "id": "string", "is_english": "bool", "truncated_chars": "int64"}
    json_columns = sorted(name for name in ads.schema.names if name.endswith("_json"))
    assert "skills_json" in json_columns and "sentences_json" in json_columns
    assert all(ads.schema.field(name).type == pa.string() for name in json_columns)
    skills = pq.read_table(out / "skills")
    assert {name: str(skills.schema.field(name).type) for name in ("ad_id", "uri", "score", "explicit", "rank")} == {
        "ad_id": "string", "uri": "string", "score": "double", "explicit": "bool", "rank": "int64"}

    # The same records as the single-process engine, ad by ad; the skills table is each ad's set, in order.
    expected = {record["id"]: record for record in pipe_records(matcher_nlp, jobads["ads"])}
    got = {row["id"]: row for row in ads.to_pylist()}
    assert got.keys() == expected.keys()
    for ad_id, record in expected.items():
        assert json.loads(got[ad_id]["skills_json"]) == record["skills"]
        assert json.loads(got[ad_id]["sentences_json"]) == record["sentences"]
    by_ad = {ad_id: [row["uri"] for row in rows] for ad_id, rows in itertools.groupby(
        sorted(skills.to_pylist(), key=lambda r: (r["ad_id"], r["rank"])), key=lambda r: r["ad_id"])}
    assert sum(map(len, by_ad.values())) == skills.num_rows > N_TECH
    assert all(by_ad.get(ad_id, []) == [s["uri"] for s in record["skills"]] for ad_id, record in expected.items())


@needs_ray
@pytest.mark.slow  # make test-all: Ray's failure paths (make test keeps the engine's main test)
def test_ray_engine_reads_parquet_by_the_json_lines_rules(tmp_path, ray_local, matcher_dir, jobads):
    result = extract_ray(matcher_dir, jobads["parquet"], tmp_path / "out", settings=RaySettings(batch_size=16))
    assert result.summary["ads_out"] == 40 and result.summary["rejected_by_reason"] == {
        "text field 'description' is not a string": 1}
    assert result.summary["repaired_by_reason"] == {"missing id field 'id'": 1}
    ids = [row["id"] for row in sorted(ads_rows(tmp_path / "out"), key=lambda r: r["seq"])]
    assert ids[3] == "more.parquet:4" and ids[:3] == [ad.id for ad in jobads["ads"][:3]]


def test_parquet_rows_are_mended_by_the_readers_rules(tmp_path):
    """Arrow holds no lone surrogate, but NUL, other controls and stray BOMs pass: the read task mends them."""
    path = tmp_path / "ads.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": "p\x001", "description": "\ufeffPython\x00 and SQL"},
                                         {"id": "p2", "description": "\x00\x1b"}]), path)
    blocks = list(read_blocks(InputSpec.of(path, "parquet", "ads"), AdFormat(), block_ads=10, staged=set()))
    rows = pa.concat_tables(blocks).to_pylist()
    assert blocks[0].schema == READ_SCHEMA
    assert [(r["id"], r["text"], r["file"], r["line"]) for r in rows if r["kind"] == "ad"] == [
        ("p1", "Python and SQL", str(path), 1)]
    report = json.loads(rows[-1]["report"])
    assert report["repaired_lines"] == {CONTROL_CHARACTER: 1, BYTE_ORDER_MARK: 1}
    assert report["rejected_lines"] == {"empty text field 'description'": 1}


# ------------------------------------------------------------------------------------------ failures
class PoisonActor(PipelineActor):
    """The pipeline with a component that raises on the poison ad's marker word (``bad_input``)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        add_poison(self.nlp)


@needs_ray
@pytest.mark.slow  # make test-all: Ray's failure paths (make test keeps the engine's main test)
def test_a_poison_ad_fails_alone_is_listed_once_and_never_retried(tmp_path, ray_local, matcher_dir, matcher_nlp):
    """Its batch is rerun ad by ad in the actor: the poison ad becomes one failed row, the batch returns, so Ray
    retries nothing; every good ad is written once, with the single engine's record."""
    path = tmp_path / "ads.jsonl"
    path.write_text("".join(json.dumps(ad) + "\n" for ad in ads_with_poison(40, poison_at=21)))
    out = tmp_path / "out"
    result = extract_ray(matcher_dir, path, out, settings=RaySettings(batch_size=8), actor=PoisonActor)
    assert_each_ad_once(out, 40)
    assert (result.summary["failed"], result.summary["failed_by_error"]) == (1, {"PoisonedAdError": 1})
    assert result.summary["inputs"][0] | {"key": None} == {"input": str(path.resolve()), "key": None, "ads_in": 41,
                                                            "ads_out": 40, "failed": 1, "rejected": 0}
    assert "41 ad(s) in = 40 written + 1 failed (1 × PoisonedAdError; listed in failed/) + 0 rejected" in (
        result.describe())
    (part,) = (out / "failed").glob("*/part-*.jsonl")
    (failed,) = [json.loads(line) for line in part.read_text().splitlines()]
    assert {k: failed[k] for k in ("seq", "file", "line", "id", "error")} == {
        "seq": 21, "file": str(path), "line": 22, "id": "poison", "error": "PoisonedAdError"}
    good = [ad for ad in read_ads(path) if ad.id != "poison"]
    got = {row["id"]: json.loads(row["skills_json"]) for row in ads_rows(out)}
    assert got == {record["id"]: record["skills"] for record in pipe_records(matcher_nlp, good)}


@needs_ray
@pytest.mark.slow  # make test-all: Ray's failure paths (make test keeps the engine's main test)
def test_cli_engine_ray_writes_every_ad_of_the_issues_file(tmp_path, ray_local, matcher_dir):
    """The issue's file (#23): its read task built no Arrow block of a lone surrogate; now the ad is mended."""
    path = tmp_path / "ads.jsonl"
    path.write_bytes(b'{"id": "good1", "description": "We need someone to manage budgets."}\n'
                     b'{"id": "bad", "description": "SQL \\ud83d and more"}\n'
                     b'{"id": "good2", "description": "Python experience is a plus."}\n')
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["extract", str(matcher_dir), str(path), "--output", str(out),
                                      "--engine", "ray"])
    assert result.exit_code == 0, result.output
    assert "3 ad(s) in = 3 written + 0 failed + 0 rejected" in result.output
    assert sorted(row["id"] for row in ads_rows(out)) == ["bad", "good1", "good2"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["repaired_by_reason"] == {"lone UTF-16 surrogates replaced with U+FFFD": 1}
    assert not (out / "failed").exists()


class KillOnceActor(PipelineActor):
    """Kills its own process (SIGKILL, as the OOM killer would) on its second batch, once per test folder."""

    def __init__(self, marker: str, **kwargs):
        super().__init__(**kwargs)
        self.marker, self.calls = marker, 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls == 2:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(batch)


class FailLaterActor(PipelineActor):
    """Raises once some parts are staged (waiting for them from its fifth batch on): an interrupted run."""

    def __init__(self, staging: str, **kwargs):
        super().__init__(**kwargs)
        self.staging, self.calls = Path(staging), 0

    def __call__(self, batch):
        self.calls += 1
        if self.calls >= 5:
            deadline = time.monotonic() + 60
            while not list(self.staging.glob("ads/*/part-*.parquet")) and time.monotonic() < deadline:
                time.sleep(0.2)
            raise RuntimeError("stop here")
        return super().__call__(batch)


def with_args(actor: type, **kwargs) -> type:
    """``actor`` with constructor arguments bound (extract_ray passes only the pipeline's)."""
    return type(actor.__name__, (actor,), {"__init__": lambda self, **kw: actor.__init__(self, **kwargs, **kw)})


@needs_ray
@pytest.mark.slow  # make test-all: Ray's failure paths (make test keeps the engine's main test)
def test_a_killed_actor_is_restarted_and_every_ad_is_written_once(tmp_path, ray_local, matcher_dir, jobads):
    marker = tmp_path / "killed"
    result = extract_ray(matcher_dir, jobads["jsonl"], tmp_path / "out", settings=RaySettings(batch_size=8),
                         actor=with_args(KillOnceActor, marker=str(marker)))
    assert marker.exists()  # an actor did die mid-run
    assert result.ads_extracted == N_TECH + N_NHS
    assert_each_ad_once(tmp_path / "out", N_TECH + N_NHS)


@needs_ray
@pytest.mark.slow  # make test-all: Ray's failure paths (make test keeps the engine's main test)
def test_a_rerun_resumes_an_interrupted_run_and_skips_finished_inputs(tmp_path, ray_local, matcher_dir, jobads):
    out = tmp_path / "out"
    settings = RaySettings(num_workers=1, batch_size=8, part_ads=16)
    with pytest.raises(Exception, match="stop here"):
        extract_ray(matcher_dir, jobads["jsonl"], out, settings=settings,
                    actor=with_args(FailLaterActor, staging=str(out / "_staging")))
    staged = len(pq.read_table(out / "_staging" / "ads").column("seq"))
    assert 0 < staged < N_TECH + N_NHS and not (out / "done").exists()  # parts written, nothing committed

    resumed = extract_ray(matcher_dir, jobads["jsonl"], out, settings=settings)
    assert resumed.ads_extracted == N_TECH + N_NHS - staged  # the staged ads are not extracted again
    assert_each_ad_once(out, N_TECH + N_NHS)
    assert not (out / "_staging").exists()

    again = extract_ray(matcher_dir, jobads["jsonl"], out, settings=settings)
    assert again.ads_extracted == 0 and len(again.skipped) == 2 and again.summary == resumed.summary
    assert_each_ad_once(out, N_TECH + N_NHS)
    with pytest.raises(ConfigError, match="id_field"):
        extract_ray(matcher_dir, jobads["jsonl"], out, settings=settings, id_field="title")


def test_engine_ray_without_ray_says_how_to_install_it(tmp_path, monkeypatch, matcher_dir, jobads):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError, as on an install without the extra
    result = CliRunner().invoke(app, ["extract", str(matcher_dir), str(jobads["jsonl"][0]), "--output",
                                      str(tmp_path / "out"), "--engine", "ray"])
    assert result.exit_code == 2 and 'pip install ".[ray]"' in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("options, message", [
    (["--csv", "x.csv"], "--csv: only with --engine single"),
    ([], "--engine ray needs --output"),
    (["--engine", "spark"], "--engine must be 'single' or 'ray', got 'spark'"),
    (["--num-workers", "0"], "[extract --engine ray] num_workers must be > 0, got 0"),
    (["--cpus-per-worker", "0"], "[extract --engine ray] cpus_per_worker must be > 0, got 0"),
    (["--engine", "single", "--timeline", "t.jsonl"], "--timeline: only with --engine ray"),
])
def test_engine_ray_refuses_what_it_does_not_do(tmp_path, matcher_dir, jobads, options, message):
    if not HAS_RAY and "spark" not in message and "--timeline" not in message:
        pytest.skip('Ray is an optional extra, not installed: pip install ".[ray]"')
    output = [] if "needs --output" in message else ["--output", str(tmp_path / "out")]
    engine = [] if "--engine" in options else ["--engine", "ray"]
    result = CliRunner().invoke(app, ["extract", str(matcher_dir), str(jobads["jsonl"][0]), *output, *engine,
                                      *options])
    assert result.exit_code == 2 and message in " ".join(result.output.split())


@needs_ray
@pytest.mark.slow
def test_ray_engine_runs_the_full_pipeline_with_its_ranker(tmp_path, ray_local, pipeline_dir, pipeline_nlp, jobads):
    """The default pipeline (matcher + untrained ranker + decider) through two actors: the same rankings."""
    ads = jobads["ads"][:20]
    path = tmp_path / "ads.jsonl"
    path.write_text("".join(json.dumps({"id": ad.id, "description": ad.text}) + "\n" for ad in ads))
    extract_ray(pipeline_dir, path, tmp_path / "out", settings=RaySettings(batch_size=8))
    got = {row["id"]: json.loads(row["ranking_json"]) for row in ads_rows(tmp_path / "out")}
    for record in pipe_records(pipeline_nlp, ads):
        assert [s["uri"] for s in got[record["id"]]] == [s["uri"] for s in record["ranking"]]
        assert got[record["id"]] and all(abs(a["score"] - b["score"]) < 1e-4
                                         for a, b in zip(got[record["id"]], record["ranking"]))


ENGINE_MODULES = ["pipeline.commands.ray_engine", *(f"pipeline.commands.ray_engine.{name}"
                                                   for name in ("read", "actor", "sink", "output", "engine"))]


def test_the_engine_modules_load_without_the_models_stack():
    """Ray's read and write tasks import the package: they must not pay for spaCy and torch (the actors do)."""
    import subprocess

    code = (f"import sys; import {', '.join(ENGINE_MODULES)}; "
            "print(sorted({'spacy', 'torch', 'thinc'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@needs_ray
def test_a_run_sets_ray_datas_block_size_and_stream_buffer_and_restores_them():
    """On the pinned Ray's own DataContext: the private stream buffer ``RaySettings.stream_blocks`` sets is there
    (a Ray that drops it fails here, before runs get slower), a run sets it and the block size, and puts both
    back even when the run fails."""
    import ray

    context = ray.data.DataContext.get_current()
    assert ray.__version__ == TESTED_RAY, f"Ray {ray.__version__}: measure stream_blocks again, then set TESTED_RAY"
    assert hasattr(context, STREAM_BUFFER), f"Ray {ray.__version__}'s DataContext has no {STREAM_BUFFER}"
    before = (context.target_max_block_size, getattr(context, STREAM_BUFFER))
    assert before[0] != 4096 and before[1] != 16
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowerStreamingWarning)
        with pytest.raises(RuntimeError, match="mid-run"):
            with data_context(context, RaySettings(block_bytes=4096, stream_blocks=16)):
                assert (context.target_max_block_size, getattr(context, STREAM_BUFFER)) == (4096, 16)
                raise RuntimeError("mid-run")
    assert (context.target_max_block_size, getattr(context, STREAM_BUFFER)) == before


@needs_ray
def test_a_ray_without_the_stream_buffer_says_the_run_will_be_slower():
    """A Ray whose DataContext lost the private setting (a fresh DataContext of the real Ray, the setting
    removed): the run warns and still sets (and restores) the block size."""
    from ray.data import DataContext

    context = DataContext()
    delattr(context, STREAM_BUFFER)
    default = context.target_max_block_size
    with pytest.warns(SlowerStreamingWarning, match=f"tested with Ray {re.escape(TESTED_RAY)}.*slower"):
        with data_context(context, RaySettings(block_bytes=4096)):
            assert context.target_max_block_size == 4096
    assert context.target_max_block_size == default and not hasattr(context, STREAM_BUFFER)
