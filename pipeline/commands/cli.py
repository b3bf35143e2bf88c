"""Command line: thin typer commands over importable functions. Only this layer prints and exits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from pipeline.commands.packaging import PACKAGE_NAME, PACKAGE_VERSION
from pipeline.commands.serve_requests import ServeSettings
from pipeline.components.pipes import DEFAULT_ENCODER, MATCHER
from pipeline.corpus.settings import CorpusSettings
from pipeline.errors import ConfigError, EscoSkillsError
from pipeline.io.jobads import ID_FIELD, TEXT_FIELD

app = typer.Typer(add_completion=False, no_args_is_help=True, help="ESCO skill extraction for job ads (spaCy).")
CORPUS = CorpusSettings()  # the corpus command's defaults
SERVE = ServeSettings()  # the serve command's defaults

ESCO_OPTION = typer.Option(Path("../shared/esco/v1.1.1"), "--taxonomy", "--esco", help="The taxonomy: an ESCO CSV "
                           "export (folder, zips or CSVs) or a taxonomy CSV (docs/taxonomy.md).")
KNOWN_ERRORS = (EscoSkillsError, FileNotFoundError)
FAIL_FAST_OPTION = typer.Option(False, "--fail-fast", help="Stop at the first ad whose processing raises, with its "
                                "traceback (debugging); by default such an ad is listed as failed and the run goes on.")


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def assemble(
    esco: Path = ESCO_OPTION,
    output: Path = typer.Option(..., "--output", "-o", help="Pipeline folder to write."),
    ranker: bool = typer.Option(True, "--ranker/--no-ranker", help="Add the (untrained) bi-encoder ranker."),
    encoder: str = typer.Option(DEFAULT_ENCODER, help="Encoder name or local path."),
) -> None:
    """Build a pipeline folder (segmenter, normalizer, matcher, ranker) from the ESCO export."""
    from pipeline.components.assembly import assemble as build

    try:
        nlp = build(esco, output, with_ranker=ranker, encoder=encoder)
    except KNOWN_ERRORS as err:
        _fail(err)
    matcher = nlp.get_pipe(MATCHER)
    typer.echo(f"wrote {output} with {nlp.pipe_names}")
    typer.echo("label policy: " + json.dumps(matcher.policy_report))


@app.command()
def extract(
    model: Path = typer.Argument(..., help="Pipeline folder or installed package name."),
    inputs: List[Path] = typer.Argument(..., help="A folder, .jsonl/.ndjson/.json (JSON Lines), or .txt/.html/.htm "
                                                  "(one ad per file, or per line with --lines); any of them gzipped. "
                                                  "--engine ray: several, and .parquet too."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="JSONL output, one line per ad (--engine "
                                                                       "ray: the Parquet folder)."),
    csv_output: Optional[Path] = typer.Option(None, "--csv", help="Also write a CSV of each ad's skill set (ad, uri, "
                                              "label, score, explicit, probability, evidence)."),
    ranking: bool = typer.Option(False, "--ranking", help="CSV: every ranked skill instead of the set."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write an HTML page with every ad as written and "
                                        "its skills marked (the page serve shows)."),
    text_field: str = typer.Option(TEXT_FIELD, help="JSONL field holding the ad text."),
    id_field: str = typer.Option(ID_FIELD, help="JSONL field holding the ad id."),
    lines: bool = typer.Option(False, "--lines", help="Treat each line of a .txt file as one ad."),
    top_k: int = typer.Option(10, help="Skills of each kind per ad in the table, per list in the HTML."),
    table: bool = typer.Option(False, "--table", help="Print a summary of each ad's skills (explicit / implied)."),
    batch_size: int = typer.Option(32),
    n_process: int = typer.Option(1),
    engine: str = typer.Option("single", "--engine", help="single (this process) or ray (Ray Data, Parquet out; "
                                                          "pip install \".[ray]\")."),
    num_workers: int = typer.Option(2, "--num-workers", help="--engine ray: actors, each loads the pipeline once."),
    cpus_per_worker: int = typer.Option(1, "--cpus-per-worker", help="--engine ray: CPUs (and torch threads) each "
                                                                     "actor asks Ray for."),
    address: Optional[str] = typer.Option(None, "--address", help="--engine ray: the Ray cluster to join (default "
                                                                  "RAY_ADDRESS, else a local Ray)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Encoder backend: torch or onnx-int8 (pip install "
                                                                  "\".[fast]\")."),
    timeline: Optional[Path] = typer.Option(None, "--timeline", help="--engine ray: log each actor's pipeline load "
                                            "and batches to this JSON Lines file (on a cluster: a shared path) and "
                                            "say where the run's time went."),
    fail_fast: bool = FAIL_FAST_OPTION,
) -> None:
    """Find the ESCO skills in job ads."""
    config = {}
    if backend:
        from pipeline.components.encoder import backend_override

        config = backend_override(backend)
    if engine != "single":
        from pipeline.commands.ray_engine import run_ray_command

        try:
            result = run_ray_command(model, inputs, output, engine=engine, num_workers=num_workers,
                                     cpus_per_worker=cpus_per_worker, batch_size=batch_size, address=address,
                                     config=config, text_field=text_field, id_field=id_field, lines=lines,
                                     timeline=timeline, fail_fast=fail_fast,
                                     single_only={"--csv": csv_output, "--html": html, "--table": table,
                                                  "--ranking": ranking, "--n-process": n_process != 1})
        except KNOWN_ERRORS as err:
            _fail(err)
        typer.echo(result.describe(), err=True)
        return
    if timeline is not None:
        _fail(ConfigError("--timeline: only with --engine ray (it logs the Ray actors' batches)"))
    if len(inputs) != 1:
        _fail(ValueError(f"the single engine reads one input (a file or a folder), got {len(inputs)}; --engine ray "
                         "reads many"))
    from pipeline.commands.extract import extract_file

    input = inputs[0]
    try:
        if config:
            from pipeline.components.pipes import load_pipeline

            model = load_pipeline(model, config=config)
        summary = extract_file(model, input, output, csv_path=csv_output, html_path=html, ranking=ranking,
                               text_field=text_field, id_field=id_field, lines=lines, top_k=top_k, print_table=table,
                               batch_size=batch_size, n_process=n_process, fail_fast=fail_fast)
    except KNOWN_ERRORS as err:
        _fail(err)
    typer.echo(summary.describe(), err=True)


@app.command()
def serve(
    model: Path = typer.Argument(..., help="Pipeline folder or installed package name."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0: every one)."),
    port: int = typer.Option(8000, "--port"),
    max_chars: int = typer.Option(SERVE.max_chars, "--max-chars", help="Longest ad in characters (longer: 413)."),
    max_batch: int = typer.Option(SERVE.max_batch, "--max-batch", help="Most ads per batch request (more: 413)."),
    top_k: int = typer.Option(SERVE.top_k, help="Skills per list on the page."),
    text_field: str = typer.Option(TEXT_FIELD, help="JSON field holding the ad text."),
    id_field: str = typer.Option(ID_FIELD, help="JSON field holding the ad id."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Encoder backend: torch or onnx-int8."),
) -> None:
    """Serve the pipeline: POST /extract (and /extract/batch, /extract.csv), GET /health, and a page at / to paste
    an ad into (pip install ".[serve]")."""
    from pipeline.commands.serve import serve as run_server

    try:
        settings = ServeSettings.load("serve", {"max_chars": max_chars, "max_batch": max_batch, "top_k": top_k,
                                                "text_field": text_field, "id_field": id_field})
        config = {}
        if backend:
            from pipeline.components.encoder import backend_override

            config = backend_override(backend)
        run_server(model, settings, host=host, port=port, config=config)
    except KNOWN_ERRORS as err:
        _fail(err)


@app.command()
def corpus(
    inputs: List[Path] = typer.Argument(..., help="Job-ad files or folders: JSON Lines (.jsonl/.ndjson/.json) or "
                                                  "text/HTML (.txt/.html/.htm, one ad per file); any gzipped."),
    esco: Path = ESCO_OPTION,
    output: Path = typer.Option(..., "--output", "-o", help="Corpus folder (datasets on disk + manifest.json)."),
    limit: Optional[int] = typer.Option(CORPUS.limit, help="Read at most this many ads (in total)."),
    text_field: str = typer.Option(CORPUS.text_field, help="JSONL field holding the ad text."),
    id_field: str = typer.Option(CORPUS.id_field, help="JSONL field holding the ad id."),
    dev_fraction: float = typer.Option(CORPUS.dev_fraction, help="Share of ads in the dev split."),
    seed: int = typer.Option(CORPUS.seed),
    workers: int = typer.Option(CORPUS.workers, help="Processes for cleaning and matching."),
    fail_fast: bool = FAIL_FAST_OPTION,
) -> None:
    """Build the distant-supervision corpus (sentence → ESCO skills) from unlabelled job ads."""
    from pipeline.corpus.build import build_corpus

    try:
        manifest = build_corpus(inputs, output, esco=esco, limit=limit, text_field=text_field, id_field=id_field,
                                dev_fraction=dev_fraction, seed=seed, workers=workers, fail_fast=fail_fast)
    except KNOWN_ERRORS as err:
        _fail(err)
    typer.echo(json.dumps(manifest.get("counts", {}), indent=2))


@app.command()
def train(
    config: Path = typer.Argument(..., help="Training config (configs/*.cfg)."),
    corpus: Path = typer.Option(..., "--corpus", help="Corpus folder from `corpus`."),
    esco: Path = ESCO_OPTION,
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the trained pipeline."),
    validation: List[Path] = typer.Option([], "--validation", help="Benchmark CSVs for model selection."),
    overrides: List[str] = typer.Option([], "--set", help="Config overrides, e.g. --set training.max_steps=100"),
    resume: bool = typer.Option(False, help="Resume from the last checkpoint in OUTPUT."),
) -> None:
    """Train the bi-encoder ranker from a config; write a loadable pipeline."""
    from pipeline.training.trainer import train as run_training

    try:
        run_training(config, corpus, output, esco=esco, validation=validation, overrides=overrides, resume=resume)
    except KNOWN_ERRORS as err:
        _fail(err)


@app.command("rerank-train")
def rerank_train(
    model: Path = typer.Argument(..., help="Trained pipeline folder: the first stage, left as it is."),
    corpus: Path = typer.Option(..., "--corpus", help="Corpus folder from `corpus`: training pairs, decider gate."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for MODEL + the trained reranker."),
    validation: List[Path] = typer.Option(..., "--validation", help="Benchmark CSVs for model selection."),
    overrides: List[str] = typer.Option([], "--set", help="Settings, e.g. --set rerank.max_steps=100 --set "
                                        "components.esco_skill_reranker.candidates=30"),
) -> None:
    """Train a cross-encoder reranker on the first stage's top K (hard negatives mined by it); write a pipeline."""
    from pipeline.training.config import parse_overrides
    from pipeline.training.reranker_training import rerank_train as run_rerank_training

    try:
        summary = run_rerank_training(model, corpus, output, validation=validation,
                                      overrides=parse_overrides(overrides))
    except KNOWN_ERRORS as err:
        _fail(err)
    first, best = summary["first_stage_metrics"]["pooled/rp@5"], summary["best_metrics"]["pooled/rp@5"]
    typer.echo(f"wrote {output}: pooled RP@5 {first:.4f} (first stage) -> {best:.4f} (reranked, first_stage_weight "
               f"{summary['first_stage_weight']}), {summary['steps']} steps in {summary['train_seconds']} s")


@app.command()
def calibrate(
    model: Path = typer.Argument(..., help="Pipeline folder; the calibration is written into it."),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="Corpus folder: the gate's skill sentences and "
                                                                 "its boilerplate.jsonl (non-skill lines)."),
    validation: List[Path] = typer.Option(..., "--validation", help="Benchmark CSVs: the skill decisions."),
    reliability: Optional[Path] = typer.Option(None, "--reliability", help="Write the reliability diagram (SVG)."),
    jobads: List[Path] = typer.Option([], "--jobads", help="Also measure the set size per ad on these ads (slow)."),
    ads: int = typer.Option(1000, "--ads", help="How many ads of --jobads (the first, spread over the files)."),
    overrides: List[str] = typer.Option([], "--set", help="Calibration settings, e.g. --set "
                                        "calibration.drop_requirement_lines=true (CalibrationSettings)."),
    counts: Optional[Path] = typer.Option(None, "--counts", help="Write the pooled cross-file row sentence by "
                                          "sentence (JSON), for `compare-sets`."),
) -> None:
    """Fit the decider (gate, explicit and implied decisions, thresholds) and write it into MODEL."""
    from pipeline.evaluation.calibration_report import format_report
    from pipeline.training.config import overrides_by_section, parse_overrides
    from pipeline.training.decider_fit import SECTION, CalibrationSettings, calibrate as run_calibration

    try:
        values = overrides_by_section(parse_overrides(overrides), "calibrate", (SECTION,))[SECTION]
        settings = CalibrationSettings.load(SECTION, values)
        result = run_calibration(model, corpus, validation, settings=settings, reliability_path=reliability,
                                 jobads=jobads, n_ads=ads)
    except KNOWN_ERRORS as err:
        _fail(err)
    typer.echo(format_report(result.report))
    if counts is not None:
        if result.counts is None:
            _fail(ConfigError("--counts needs two or more --validation files (a cross-file row)"))
        counts.write_text(json.dumps(result.counts), encoding="utf-8")
    typer.echo(f"wrote the calibration into {model}" + (f"; diagram: {reliability}" if reliability else ""))


@app.command("compare-sets")
def compare_sets(
    a: Path = typer.Argument(..., help="`calibrate --counts` JSON of side A."),
    b: Path = typer.Argument(..., help="`calibrate --counts` JSON of side B (the same benchmark files)."),
    resamples: int = typer.Option(10000, min=1, help="Bootstrap resamples of the sentences."),
) -> None:
    """Decided sets of two calibrations on the same sentences: micro P / R / F1 of each, B − A with a paired
    bootstrap 95 % interval, and each side's share of non-skill sentences given a skill."""
    from pipeline.evaluation.calibration_report import compare_counts, format_set_comparison, read_counts

    try:
        typer.echo(format_set_comparison(compare_counts(read_counts(a), read_counts(b), resamples=resamples)))
    except KNOWN_ERRORS as err:
        _fail(err)


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="Pipeline folder."),
    files: List[Path] = typer.Argument(..., help="Benchmark CSVs and/or span JSONL files (recognised by content)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="metrics JSON: {file: {metric: value}}"),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="Corpus folder: adds the masked-mention dev signal."),
    dev_signals: bool = typer.Option(True, "--dev-signals/--no-dev-signals",
                                     help="Score the masked-mention and ESCO paraphrase dev signals (needs a ranker)."),
    overrides: List[str] = typer.Option([], "--set", help="Pipeline config overrides, e.g. --set "
                                        "components.esco_skill_ranker.scoring=token (a new skill_text re-embeds "
                                        "the skills)."),
) -> None:
    """RP@5 / RP@10 / MRR on benchmark CSVs and dev signals, span P/R/F1 (seqeval) on span files."""
    from pipeline.components.pipes import RANKER
    from pipeline.components.ranker import load_overridden
    from pipeline.evaluation.report import evaluate_files, format_table
    from pipeline.training.config import parse_overrides

    try:
        nlp, rebuilt = load_overridden(model, parse_overrides(overrides))
        if rebuilt:
            typer.echo("re-embedded the skills for the overridden skill_text")
        metrics = evaluate_files(nlp, files, corpus_dir=corpus, dev_signals=dev_signals and RANKER in nlp.pipe_names)
    except KNOWN_ERRORS as err:
        _fail(err)
    typer.echo(format_table(metrics))
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(metrics, indent=2))


@app.command()
def compare(
    files: List[Path] = typer.Argument(..., help="Benchmark CSVs (per file, then pooled dev / validation / all)."),
    a: List[Path] = typer.Option(..., "--a", help="Side A: a pipeline folder; repeat for its other seeds."),
    b: List[Path] = typer.Option(..., "--b", help="Side B: a pipeline folder; repeat for its other seeds."),
    metric: str = typer.Option("rp@5", "--metric", help="rp@K or mrr."),
    resamples: int = typer.Option(10000, "--resamples", min=1, help="Bootstrap resamples of the sentences."),
    seed: int = typer.Option(0, "--seed", help="The bootstrap's random seed."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write every number as JSON."),
    set_a: List[str] = typer.Option([], "--set-a", help="Config override for side A's pipelines, e.g. --set-a "
                                    "components.esco_skill_ranker.preferred_weight=0 (a new skill_text re-embeds "
                                    "the skills)."),
    set_b: List[str] = typer.Option([], "--set-b", help="Config override for side B's pipelines: the same models "
                                    "on both sides compare two settings of one recipe."),
) -> None:
    """B against A: mean ± sd over seeds, B − A with a paired bootstrap 95 % interval over sentences, P(B > A)."""
    from pipeline.evaluation.comparison import compare as run_comparison
    from pipeline.evaluation.comparison import comparison_json, format_comparison
    from pipeline.training.config import parse_overrides

    try:
        results = run_comparison(a, b, files, metric=metric, resamples=resamples, seed=seed,
                                 a_config=parse_overrides(set_a), b_config=parse_overrides(set_b))
    except KNOWN_ERRORS as err:
        _fail(err)
    typer.echo(format_comparison(results, metric))
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(comparison_json(results, a, b, metric=metric, resamples=resamples, seed=seed,
                                                     set_a=set_a, set_b=set_b), indent=2))


@app.command()
def bench(
    model: Path = typer.Argument(..., help="Pipeline folder."),
    jobads: List[Path] = typer.Argument(..., help="Job-ad files to draw sentences and ads from."),
    sentences: int = typer.Option(2000, help="Sentences to time."),
    ads: int = typer.Option(200, help="Whole ads to time."),
    batch_size: int = typer.Option(64),
    repeats: int = typer.Option(3),
    backend: str = typer.Option("onnx-int8", "--backend", help="Also time this encoder backend ('' to skip)."),
    ray_workers: List[int] = typer.Option([1, 2], "--ray-workers", help="Also time extract on Ray Data with these "
                                                                        "worker counts (0 to skip)."),
    ray_cpus_per_worker: int = typer.Option(1, "--ray-cpus-per-worker", help="CPUs (torch threads) per Ray actor."),
    only_engines: bool = typer.Option(False, "--only-engines", help="Time only the extract engines (single process "
                                                                    "and Ray), e.g. on more ads."),
) -> None:
    """Throughput (sentences/s, ads/s), load time and peak memory, with the raw encoder as the limit."""
    from pipeline.commands.engine_bench import bench_engines
    from pipeline.evaluation.bench import bench_ads, format_results, installed_extras, run_benchmarks

    backend, ray_workers, notes = installed_extras(backend or None, ray_workers)
    try:
        results = {} if only_engines else run_benchmarks(
            model, jobads, n_sentences=sentences, n_ads=ads, batch_size=batch_size, repeats=repeats,
            backend=backend)
        if ray_workers or only_engines:
            results.update(bench_engines(model, bench_ads(jobads, ads), ray_workers, batch_size, repeats,
                                         cpus_per_worker=ray_cpus_per_worker))
    except KNOWN_ERRORS as err:
        _fail(err)
    typer.echo(format_results(results, model, batch_size, repeats))
    for note in notes:
        typer.echo(note)


@app.command()
def package(
    model: Path = typer.Argument(..., help="Trained pipeline folder."),
    output: Path = typer.Option(Path("dist"), "--output", "-o", help="Where the wheel goes."),
    name: str = typer.Option(PACKAGE_NAME),
    version: str = typer.Option(PACKAGE_VERSION),
    project_dir: Optional[Path] = typer.Option(None, "--project-dir",
                                               help="Also build this checkout's esco-skill-pipeline wheel."),
) -> None:
    """Build the pip-installable wheel en_esco_skills with `spacy package` (and the project's wheel)."""
    from pipeline.commands.packaging import build_package, build_project_wheel

    try:
        wheels = [build_package(model, output, name=name, version=version)]
        if project_dir is not None:
            wheels.append(build_project_wheel(project_dir, output))
    except KNOWN_ERRORS as err:
        _fail(err)
    for wheel in wheels:
        typer.echo(f"wrote {wheel}")
    typer.echo(f"install: pip install torch==2.13.0 {' '.join(str(w) for w in wheels)}")


@app.command()
def ablation(
    configs: Path = typer.Argument(Path("configs"), help="Folder of training configs."),
    corpus: Path = typer.Option(..., "--corpus"),
    esco: Path = ESCO_OPTION,
    output: Path = typer.Option(Path("build/ablation"), "--output", "-o"),
    validation: List[Path] = typer.Option([], "--validation"),
    seeds: List[int] = typer.Option([0], "--seed"),
    overrides: List[str] = typer.Option([], "--set"),
) -> None:
    """Train every config with the same corpus, budget and seeds; print and save the table."""
    from pipeline.training.ablation import run_ablation

    try:
        table = run_ablation(configs, corpus, esco, output, validation=validation, seeds=seeds, overrides=overrides)
    except KNOWN_ERRORS as err:
        _fail(err)
    typer.echo(table)


taxonomy_app = typer.Typer(no_args_is_help=True, help="Check a taxonomy, or convert one to the generic CSV.")
app.add_typer(taxonomy_app, name="taxonomy")


@taxonomy_app.command("check")
def taxonomy_check(path: Path = typer.Argument(..., help="An ESCO CSV export or a taxonomy CSV.")) -> None:
    """Read a taxonomy as the pipeline will (every error names its line) and print what it holds."""
    from pipeline.esco.generic import describe
    from pipeline.esco.taxonomy import Taxonomy

    try:
        typer.echo(json.dumps(describe(Taxonomy.load(path)), indent=2))
    except KNOWN_ERRORS as err:
        _fail(err)


@taxonomy_app.command("convert")
def taxonomy_convert(source: Path = typer.Argument(..., help="An ESCO CSV export (or a taxonomy CSV)."),
                     output: Path = typer.Argument(..., help="The generic taxonomy CSV to write.")) -> None:
    """Write a taxonomy in the generic format (id,preferred_label,alt_labels,description,broader,type)."""
    from pipeline.esco.generic import convert

    try:
        taxonomy = convert(source, output)
    except KNOWN_ERRORS as err:
        _fail(err)
    typer.echo(f"wrote {output}: {len(taxonomy):,} concepts, {len(taxonomy.group_labels):,} groups")


def main() -> None:
    # The CLI reads local weights only; hub progress bars and download attempts are noise here. transformers (where
    # a command still loads it: the reranker, a non-BERT encoder) reads the same variable when it is imported.
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import warnings

    # A warning is a message for the person at the terminal (a repaired line, a non-English ad): its kind and text,
    # not the library's source line that raised it.
    warnings.formatwarning = lambda message, category, *_args, **_kwargs: f"{category.__name__}: {message}\n"
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
