"""What the corpus build counts: stage counts and skill frequencies per source, and the manifest's pieces.

Every drop of the build is a count here, per source; totals are sums over sources. ``corpora/README.md``
describes the manifest these counts end up in.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

from pipeline.corpus.labelling import Mention
from pipeline.io.jobads import InputFile, ReadReport

TOP_SKILLS = 50
TOP_BOILERPLATE = 20
FREQUENCY_BUCKETS = ((1, 1), (2, 4), (5, 9), (10, 49), (50, 99), (100, 999), (1000, None))
STAGE_KEYS = (
    "ads_read", "ads_empty_after_cleaning", "lines", "long_lines_split", "boilerplate_lines", "duplicate_lines",
    "sentences", "duplicate_sentences", "non_english", "too_short", "too_short_with_match", "too_long",
    "sentences_kept", "sentences_matched", "sentences_unmatched", "examples_train", "examples_dev", "mentions",
    "sentences_with_cut_mention", "ads_train", "ads_dev", "ads_with_examples", "ads_failed",
)


class CorpusStats:
    """Stage counts and skill frequencies per source; totals are their sums."""

    def __init__(self) -> None:
        self.counts: Dict[str, Counter] = defaultdict(Counter)
        self.skill_examples: Dict[str, Counter] = defaultdict(Counter)
        self.skill_mentions: Dict[str, Counter] = defaultdict(Counter)

    def add(self, source: str, key: str, n: int = 1) -> None:
        self.counts[source][key] += n

    def add_example(self, source: str, mentions: Sequence[Mention]) -> None:
        self.skill_examples[source].update({uri for _, _, uri in mentions})
        self.skill_mentions[source].update(uri for _, _, uri in mentions)

    @staticmethod
    def _sum(per_source: Dict[str, Counter]) -> Counter:
        total: Counter = Counter()
        for counter in per_source.values():
            total.update(counter)
        return total

    def stage_counts(self, source: Optional[str] = None) -> Dict[str, int]:
        """Every stage's count (zero if it never happened), for one source or all."""
        counts = self.counts[source] if source is not None else self._sum(self.counts)
        out = {key: int(counts.get(key, 0)) for key in STAGE_KEYS}
        out["examples"] = out["examples_train"] + out["examples_dev"]
        return out

    def coverage(self, taxonomy: Any, source: Optional[str] = None, top_n: int = TOP_SKILLS) -> dict:
        examples = self.skill_examples[source] if source is not None else self._sum(self.skill_examples)
        mentions = self.skill_mentions[source] if source is not None else self._sum(self.skill_mentions)
        return skill_coverage(examples, mentions, taxonomy, top_n)


def skill_coverage(examples: Counter, mentions: Counter, taxonomy: Any, top_n: int = TOP_SKILLS) -> dict:
    """How many ESCO skills occur at all, how often (examples per skill, bucketed), and the most frequent ones."""
    buckets = {}
    for low, high in FREQUENCY_BUCKETS:
        name = f"{low}+" if high is None else (str(low) if low == high else f"{low}-{high}")
        buckets[name] = sum(1 for n in examples.values() if n >= low and (high is None or n <= high))
    total = len(taxonomy)
    ranked = sorted(examples.items(), key=lambda item: (-item[1], item[0]))[:top_n]
    return {
        "skills_in_taxonomy": total,
        "skills_covered": len(examples),
        "coverage": round(len(examples) / total, 4) if total else 0.0,
        "examples_per_skill": buckets,
        "top": [{"uri": uri, "label": taxonomy.label(uri), "examples": n, "mentions": int(mentions[uri])}
                for uri, n in ranked],
    }


def counts_with_inputs(stats: CorpusStats, report: ReadReport) -> Dict[str, Any]:
    """The stage counts plus the reader's: ``ads_rejected`` (by reason, including ads that cleaning emptied),
    ``rejected_lines``, ``repaired_lines``, ``file_errors``, ``blank_lines``."""
    counts: Dict[str, Any] = dict(stats.stage_counts())
    inputs = report.totals()
    ads_rejected = dict(inputs["rejected_lines"])
    if counts["ads_empty_after_cleaning"]:
        ads_rejected["no text after cleaning"] = counts["ads_empty_after_cleaning"]
    counts.update({"ads_rejected": ads_rejected, **inputs})
    return counts


def describe_input(file: InputFile, report: ReadReport) -> dict:
    """One entry of the manifest's ``inputs``: the file's identity (size, sha256) and what reading it gave."""
    info = {"path": str(file.path), "kind": file.kind, "bytes": file.path.stat().st_size,
            "sha256": sha256(file.path)}
    info.update(report.file(file.path).to_dict())
    return info


def boilerplate_top(boilerplate: Mapping[int, str], ads_per_line: Mapping[int, int],
                    top_n: int = TOP_BOILERPLATE) -> list:
    """The boilerplate lines found in most ads, for a reader of the manifest to check they are boilerplate."""
    ranked = sorted(boilerplate.items(), key=lambda kv: -ads_per_line[kv[0]])
    return [{"text": text[:200], "ads": ads_per_line[key]} for key, text in ranked[:top_n]]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
