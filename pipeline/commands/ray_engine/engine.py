"""The run: ``RaySettings``, the Ray session and Ray Data's settings, and the three stages wired together.

``extract_ray`` reads (``read.datasource``, one read task per input file), extracts (``map_batches`` over an
actor pool of ``actor.PipelineActor``s; a killed actor is restarted and its batch retried: ``max_restarts`` /
``max_task_retries``) and writes (``sink.datasink``) into ``_staging/``, then commits each input
(``output.OutputFolder``). ``run_ray_command`` is ``extract --engine ray``: it refuses what only the single engine
does and says where the time went with ``--timeline``.
"""

from __future__ import annotations

import os
import time
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

from pipeline.commands.ray_engine.actor import PipelineActor, TimedPipelineActor, timeline_stats
from pipeline.commands.ray_engine.output import OutputFolder
from pipeline.commands.ray_engine.read import PathLike, datasource, resolve_ray_inputs
from pipeline.commands.ray_engine.sink import datasink
from pipeline.errors import ConfigError
from pipeline.io.jobads import ID_FIELD, TEXT_FIELD, AdFormat
from pipeline.settings import Field, Settings, StrictInt, StrictStr

SECTION = "extract --engine ray"  # what a settings error names
INSTALL_HINT = 'pip install ".[ray]"'
STREAM_BUFFER = "_max_num_blocks_in_streaming_gen_buffer"  # RaySettings.stream_blocks
TESTED_RAY = "2.60.0"  # the Ray the stream buffer was measured with (the version setup.cfg's ray extra pins)


class RaySettings(Settings):
    """How the run is spread: the actor pool, its batches and where Ray runs."""

    num_workers: StrictInt = Field(2, gt=0)  # actors, each holding one loaded pipeline
    batch_size: StrictInt = Field(32, gt=0)  # ads per actor call (and nlp.pipe's batch size)
    cpus_per_worker: StrictInt = Field(1, gt=0)  # CPUs (and torch threads) each actor asks Ray for
    # Batches handed to an actor before it is free. One keeps the pool evenly loaded: a batch takes seconds, so
    # nothing is gained by queueing, and a queue of four (Ray's default) left one actor idle for the last ~15 %
    # of a 600-ad run while the other worked through its queue.
    batches_per_worker: StrictInt = Field(1, gt=0)
    max_restarts: StrictInt = Field(3, gt=0)  # restarts of a killed actor, and retries of its batch, before failing
    part_ads: StrictInt = Field(1000, gt=0)  # ads per Parquet part (at least; an input's last part may hold fewer)
    block_bytes: StrictInt = Field(128 * 1024, gt=0)  # Ray Data's block size target in this run: about one batch
    # Blocks a Ray task may yield before its consumer takes them (Ray Data's default: 2). An actor's results for
    # one batch are 2-3 MB of JSON, cut into ~20 blocks of ``block_bytes``; with 2 in flight they trickled back at
    # the pace of the driver's scheduling loop, the actor idle about 0.8 s per batch (busy 85 %; with 64: 0.12 s,
    # 94 %). The bound still caps how far a read task runs ahead of the actors (64 blocks: 8 MB of ad text).
    stream_blocks: StrictInt = Field(64, gt=0)
    address: Optional[StrictStr] = None  # a Ray cluster; None: RAY_ADDRESS, else a local Ray with num_workers CPUs


class SlowerStreamingWarning(UserWarning):
    """Ray Data has no ``STREAM_BUFFER`` setting (private in the Ray that was measured): the run works, but its
    actors wait for their results to be taken (``RaySettings.stream_blocks``)."""


# ---------------------------------------------------------------------------------------------------- Ray
def import_ray():
    """Ray Data, or a ConfigError saying how to install it (Ray is an optional extra)."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"--engine ray needs Ray Data, which is not installed here ({err}): {INSTALL_HINT}") from err
    return ray


@contextmanager
def ray_session(settings: RaySettings) -> Iterator[Any]:
    """The caller's Ray if one is running; else join ``address`` / ``RAY_ADDRESS``; else a local Ray with
    ``num_workers × cpus_per_worker`` CPUs, shut down afterwards."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = settings.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level="WARNING")
    else:
        ray.init(num_cpus=settings.num_workers * settings.cpus_per_worker, include_dashboard=False,
                 logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()


@contextmanager
def data_context(context: Any, settings: RaySettings) -> Iterator[Any]:
    """Ray Data's ``context`` (``DataContext.get_current()``) set for one run, restored afterwards: blocks of about
    one batch of ads (``block_bytes``), and ``stream_blocks`` blocks a task may yield before its consumer takes
    them. The latter is private in Ray: where it is gone, a SlowerStreamingWarning says so and the run goes on."""
    saved = {"target_max_block_size": context.target_max_block_size}
    if hasattr(context, STREAM_BUFFER):
        saved[STREAM_BUFFER] = getattr(context, STREAM_BUFFER)
    else:
        import ray

        warnings.warn(f"Ray {ray.__version__} has no DataContext.{STREAM_BUFFER} (tested with Ray {TESTED_RAY}): "
                      f"this run will be slower, its actors idle while their results trickle back "
                      f"(RaySettings.stream_blocks = {settings.stream_blocks} is not applied).",
                      SlowerStreamingWarning, stacklevel=3)
    for name, value in (("target_max_block_size", settings.block_bytes), (STREAM_BUFFER, settings.stream_blocks)):
        if name in saved:
            setattr(context, name, value)
    try:
        yield context
    finally:
        for name, value in saved.items():
            setattr(context, name, value)


# ---------------------------------------------------------------------------------------------------- run
@dataclass
class RayRunResult:
    """What ``extract_ray`` did: the folder's summary, and which inputs this run extracted or skipped."""

    summary: Dict[str, Any]
    extracted: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    ads_extracted: int = 0  # ads this run ran through the pipeline (the others were done by an earlier run)
    timing: Dict[str, float] = field(default_factory=dict)  # ``timeline_stats`` of the run, with ``--timeline``

    def describe(self) -> str:
        s = self.summary
        reasons = "; ".join(f"{n:,} × {r}" for r, n in Counter(s["rejected_by_reason"]).most_common())
        errors = "; ".join(f"{n:,} × {e}" for e, n in Counter(s["failed_by_error"]).most_common())
        timing = (f"; {self.timing['start-up s']:.1f} s to the first batch, {self.timing['tail s']:.1f} s after the "
                  f"last, actors busy {self.timing['actor busy share']:.0%} in between" if self.timing else "")
        return (f"{s['ads_in']:,} ad(s) in = {s['ads_out']:,} written + {s['failed']:,} failed"
                f"{f' ({errors}; listed in failed/)' if errors else ''} + {s['rejected']:,} rejected"
                f"{f' ({reasons})' if reasons else ''}; this run: {len(self.extracted)} input(s), "
                f"{self.ads_extracted:,} ad(s) extracted; {len(self.skipped)} input(s) already done{timing}")


def extract_ray(
    model: PathLike,
    inputs: Union[PathLike, Sequence[PathLike]],
    output: PathLike,
    *,
    settings: RaySettings = RaySettings(),
    text_field: str = TEXT_FIELD,
    id_field: str = ID_FIELD,
    lines: bool = False,
    config: Optional[Dict[str, Any]] = None,
    actor: type = PipelineActor,
    actor_options: Optional[Dict[str, Any]] = None,
    fail_fast: bool = False,
) -> RayRunResult:
    """Extract every ad of ``inputs`` into the Parquet folder ``output`` on Ray Data (the package's docstring).

    ``model`` must be readable by every Ray node (a shared folder or an installed package name), and so must the
    inputs and ``output`` on a cluster. ``config`` overrides the pipeline's config in every actor (e.g.
    ``backend_override("onnx-int8")``); ``actor`` is the class the pool runs (a subclass can add behaviour) and
    ``actor_options`` its constructor's further keyword arguments. An ad whose processing raises is listed in
    ``failed/`` and counted (``actor``); ``fail_fast`` lets its exception fail the run instead.
    """
    import_ray()  # before anything is written
    ad_format = AdFormat(text_field=text_field, id_field=id_field, one_per_line=lines)
    ad_format.validate()
    specs = resolve_ray_inputs([inputs] if isinstance(inputs, (str, Path)) else inputs)
    folder = OutputFolder(Path(output))
    folder.check_run({"model": str(model), "text_field": text_field, "id_field": id_field, "lines": lines,
                      "config": config or {}})
    todo = folder.pending(specs)
    written = 0
    if todo:
        staged = {spec.key: folder.staged_seqs(spec) for spec in todo}
        with ray_session(settings) as ray, data_context(ray.data.DataContext.get_current(), settings):
            ds = ray.data.read_datasource(datasource(todo, ad_format, settings.batch_size, staged), num_cpus=0)
            with warnings.catch_warnings():
                # Ray 2.60 takes the actors' restart limits only as plain remote args, which it announces it will
                # drop in 2.64 (its default then: unlimited restarts). A finite limit stops an ad that kills every
                # actor from looping forever.
                warnings.simplefilter("ignore", DeprecationWarning)
                ds = ds.map_batches(actor, fn_constructor_kwargs={"model": str(model), "config": config,
                                                                  "batch_size": settings.batch_size,
                                                                  "fail_fast": fail_fast, **(actor_options or {})},
                                    batch_size=settings.batch_size, batch_format="pyarrow",
                                    compute=ray.data.ActorPoolStrategy(
                                        size=settings.num_workers,
                                        max_tasks_in_flight_per_actor=settings.batches_per_worker),
                                    num_cpus=settings.cpus_per_worker, max_restarts=settings.max_restarts,
                                    max_task_retries=settings.max_restarts)
            sink = datasink(folder.staging, min_rows=settings.part_ads)
            ds.write_datasink(sink, ray_remote_args={"num_cpus": 0})
            written = sink.written
        for spec in todo:
            folder.commit(spec)
    summary = folder.summarize(specs)
    folder.remove_empty_staging()
    return RayRunResult(summary, [s.path for s in todo], [s.path for s in specs if s not in todo], written)


def run_ray_command(model: PathLike, inputs: Sequence[PathLike], output: Optional[PathLike], *, engine: str,
                    single_only: Dict[str, Any], num_workers: int, batch_size: int, address: Optional[str],
                    cpus_per_worker: int = 1, config: Optional[Dict[str, Any]] = None,
                    text_field: str = TEXT_FIELD, id_field: str = ID_FIELD, lines: bool = False,
                    timeline: Optional[PathLike] = None, fail_fast: bool = False) -> RayRunResult:
    """``extract --engine ray``: refuse what only the single engine does (``single_only``: option → value given),
    then ``extract_ray``. With ``timeline``, the actors log their load and batches there (a path every node can
    write: on a cluster, a shared folder) and the result says where the run's time went."""
    if engine != "ray":
        raise ConfigError(f"--engine must be 'single' or 'ray', got {engine!r}")
    import_ray()
    given = [name for name, value in single_only.items() if value]
    if given:
        raise ConfigError(f"{', '.join(given)}: only with --engine single; --engine ray writes the Parquet tables "
                          "(ads, skills) and summary.json to --output")
    if output is None:
        raise ConfigError("--engine ray needs --output DIR: the folder of Parquet tables")
    settings = RaySettings.load(SECTION, {"num_workers": num_workers, "batch_size": batch_size,
                                          "cpus_per_worker": cpus_per_worker, "address": address})
    timed = {"actor": TimedPipelineActor, "actor_options": {"timeline": str(timeline)}} if timeline else {}
    start = time.time()
    result = extract_ray(model, inputs, output, settings=settings, text_field=text_field, id_field=id_field,
                         lines=lines, config=config, fail_fast=fail_fast, **timed)
    if timeline and Path(timeline).exists():  # absent when every input was already done
        result.timing = timeline_stats(timeline, start, time.time())
    return result
