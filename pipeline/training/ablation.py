"""``make ablation``: every negative-sampling config trained with the same corpus, budget and seeds.

Rows: the untrained encoder (the pipeline ``assemble`` builds), then one row per config. Columns: RP@5 /
RP@10 / MRR on each validation file (named as ``evaluation.validation`` names them) and each pool of them
(``pooled_dev``, ``pooled_validation``, ``pooled``) as mean ± standard deviation over seeds, and the training
time. The table is returned and written to ``OUTPUT/ablation.md`` (+ ``ablation.json`` with every run); printing
it is the CLI's job. ``compare`` then says whether a row beats another beyond the noise.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Dict, List, Sequence

from pipeline.errors import ConfigError
from pipeline.evaluation.comparison import mean_sd
from pipeline.evaluation.validation import METRICS, benchmark_pools, validation_names, validation_scores


def untrained_scores(esco: Path, validation: Sequence[Path]) -> Dict[str, float]:
    """The baseline row: the pipeline ``assemble`` builds, whose encoder no config has trained yet."""
    from pipeline.components.assembly import assemble

    return validation_scores(assemble(esco, None), validation)


def run_ablation(configs: Path, corpus: Path, esco: Path, output: Path, *, validation: Sequence[Path],
                 seeds: Sequence[int] = (0,), overrides: Sequence[str] = (),
                 names: Sequence[str] = ("in_batch", "random", "taxonomy", "hard", "mixture")) -> str:
    """Train ``configs/<name>.cfg`` for every name and seed; return the markdown table (also written)."""
    from pipeline.training.trainer import train

    if not validation:
        raise ConfigError("the ablation needs --validation files to compare strategies on")
    paths = [Path(configs) / f"{name}.cfg" for name in names]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ConfigError(f"ablation configs not found: {missing}")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    runs: Dict[str, List[Dict]] = {"untrained": [{"metrics": untrained_scores(esco, validation), "seconds": 0.0}]}
    for path in paths:
        for seed in seeds:
            started = time.time()
            summary = train(path, corpus, output / f"{path.stem}-seed{seed}", esco=esco, validation=validation,
                            overrides=[*overrides, f"system.seed={seed}"])
            runs.setdefault(path.stem, []).append({"metrics": summary["best_metrics"], "seed": seed,
                                                   "seconds": time.time() - started, "steps": summary["steps"]})
            (output / "ablation.json").write_text(json.dumps(runs, indent=2))
    table = format_ablation(runs, validation, seeds, overrides)
    (output / "ablation.md").write_text(table + "\n")
    return table


def format_ablation(runs: Dict[str, List[Dict]], validation: Sequence[Path], seeds: Sequence[int],
                    overrides: Sequence[str]) -> str:
    names = validation_names(validation)
    splits = [*names.values(), *benchmark_pools(list(names))]
    header = "| strategy | " + " | ".join(f"{s} RP@5 / RP@10 / MRR" for s in splits) + " | train min |"
    lines = [header, "|" + "---|" * (len(splits) + 2)]
    for name, entries in runs.items():
        cells = []
        for split in splits:
            cells.append(" / ".join(mean_sd([e["metrics"].get(f"{split}/{m}", float("nan")) for e in entries])
                                    for m in METRICS))
        minutes = statistics.mean(e["seconds"] for e in entries) / 60
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {minutes:.1f} |")
    lines.append(f"\nseeds {list(seeds)}; overrides {list(overrides) or 'none'}; values ×100, mean ± sd over seeds")
    return "\n".join(lines)
