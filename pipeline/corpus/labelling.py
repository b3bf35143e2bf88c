"""Labelling cleaned lines with the literal matcher, in this process or in a pool of workers.

A line is split into sentences (the segmenter's rules), each sentence is filtered (English, word count) and
gets the matcher's mentions as character offsets into the sentence. ``WorkPool`` runs cleaning and labelling
tasks over worker processes and gives results back in task order, so the corpus is identical for any number of
workers. An ad or line whose cleaning or labelling raises gives a ``lines.Failure`` in place of its result (its
ad fails alone), unless the pool is ``fail_fast``.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, List, Optional, Tuple, Union

from pipeline.components.pipes import MATCHER, MATCHER_PIPES, NORMALIZER, SEGMENTER, load_pipeline, make_clean_doc
from pipeline.components.segmenter import sentences
from pipeline.corpus.lines import CleanedAd, Failure, clean_ads, isolated
from pipeline.io.boilerplate import line_key
from pipeline.errors import EscoDataError
from pipeline.io.text import is_english

if TYPE_CHECKING:  # pragma: no cover
    from spacy.language import Language

    from pipeline.corpus.settings import CorpusSettings

Mention = Tuple[int, int, str]  # start, end, uri (character offsets into the sentence)
SentenceResult = Tuple[int, str, Optional[str], Optional[List[Mention]]]  # key, status, text, mentions
LineResult = Tuple[int, List[SentenceResult]]  # matches in the whole line, its sentences


def load_matcher_pipeline(path: Path) -> "Language":
    """A saved pipeline's segmenter → normalizer → matcher (any other component, e.g. a ranker, is excluded)."""
    from spacy.util import load_config

    config_file = Path(path) / "config.cfg"
    if not config_file.exists():
        raise EscoDataError(f"'{config_file}' is missing: '{path}' is not a saved spaCy pipeline.")
    pipes = list(load_config(config_file)["nlp"]["pipeline"])
    absent = [name for name in MATCHER_PIPES if name not in pipes]
    if absent:
        raise EscoDataError(f"The pipeline at '{path}' has no {absent}: the corpus needs the literal matcher "
                            "(build one with `python -m pipeline assemble --no-ranker`).")
    return load_pipeline(path, exclude=[name for name in pipes if name not in MATCHER_PIPES])


def matcher_for_workers(esco: Optional[Path], pipeline_path: Optional[Path], work_dir: Path,
                        save: bool) -> Tuple["Language", Optional[Path]]:
    """The matcher pipeline, and a folder that spawned workers can load it from (saved only if ``save`` and none
    exists yet: forked workers inherit the loaded one)."""
    if pipeline_path is not None:
        return load_matcher_pipeline(Path(pipeline_path)), Path(pipeline_path)
    from pipeline.components.assembly import assemble

    nlp = assemble(esco, None, with_ranker=False)
    if not save:
        return nlp, None
    folder = work_dir / "matcher"
    nlp.to_disk(folder)
    return nlp, folder


class SentenceLabeller:
    """Runs the matcher over cleaned lines; splits each line into sentences, then labels and filters each one.

    It calls the components' own methods (``set_sentence_starts``, the normalizer, ``match``) rather than
    ``nlp.pipe``: the corpus needs neither the ad-level language score nor the sentence predictions, and reading
    sentences and word counts from ``doc.to_array`` avoids a Python ``Token`` per token — twice as fast.
    """

    def __init__(self, nlp: "Language", settings: "CorpusSettings"):
        self.nlp = nlp
        self.settings = settings  # which sentences become rows: English-looking, min_words..max_words words
        self.segmenter = nlp.get_pipe(SEGMENTER)
        self.normalizer = nlp.get_pipe(NORMALIZER)
        self.matcher = nlp.get_pipe(MATCHER)

    def label_lines(self, lines: List[str], fail_fast: bool = False) -> List[Union[LineResult, Failure]]:
        """Per line its result, or the ``Failure`` of a line whose labelling raised (raised with ``fail_fast``)."""
        return [isolated(self.label_line, line, fail_fast=fail_fast) for line in lines]

    def label_line(self, line: str) -> LineResult:
        """Matches in the line, and per sentence: key, status, text and mentions (offsets into the sentence)."""
        from spacy.attrs import IS_PUNCT, IS_SPACE

        # Lines are cleaned already; the job-ad tokenizer would clean again (and could move offsets).
        doc = make_clean_doc(self.nlp, line)
        if not len(doc):
            return 0, []
        self.segmenter.set_sentence_starts(doc)
        self.normalizer(doc)
        spans = sorted((span for span, _ in self.matcher.match(doc)), key=lambda s: (s.start, s.end))
        rows = doc.to_array([IS_PUNCT, IS_SPACE]).tolist()
        results: List[SentenceResult] = []
        j = 0
        for sent in sentences(doc):
            while j < len(spans) and spans[j].start < sent.start:
                j += 1
            inside = []
            while j < len(spans) and spans[j].start < sent.end:
                inside.append(spans[j])
                j += 1
            n_words = sum(1 for row in rows[sent.start:sent.end] if not (row[0] or row[1]))
            results.append(self.label_sentence(doc.text, sent.start_char, sent.end_char, sent.end, n_words, inside))
        return len(spans), results

    def label_sentence(self, line: str, start_char: int, end_char: int, end_token: int, n_words: int,
                       spans: List[Any]) -> SentenceResult:
        """Status "ok" (or "ok_cut_mention" when a mention crosses the sentence end) or the reason it is dropped."""
        raw = line[start_char:end_char]
        text = raw.strip()
        base = start_char + len(raw) - len(raw.lstrip())
        key = line_key(text)
        mentions = [(s.start_char - base, s.end_char - base, s.kb_id_) for s in spans if s.end <= end_token]
        if not is_english(text, self.settings.min_foreign_share):
            return key, "non_english", None, None
        if n_words < self.settings.min_words:
            return key, "too_short_with_match" if mentions else "too_short", None, None
        if n_words > self.settings.max_words:
            return key, "too_long", None, None
        if len(mentions) < len(spans):
            return key, "ok_cut_mention", text, mentions
        return key, "ok", text, mentions


# ---------------------------------------------------------------------------------------------------- workers
_WORKER: Optional[SentenceLabeller] = None


def _init_worker(pipeline_dir: str, settings: "CorpusSettings") -> None:
    global _WORKER
    _WORKER = SentenceLabeller(load_matcher_pipeline(Path(pipeline_dir)), settings)


def _worker_label(args: Tuple[List[str], bool]) -> List[Union[LineResult, Failure]]:
    assert _WORKER is not None, "worker not initialized"
    return _WORKER.label_lines(*args)


def _worker_clean(args: Tuple[List[str], int, bool]) -> List[Union[CleanedAd, Failure]]:
    return clean_ads(*args)


def default_start_method() -> str:
    """``fork`` where it is safe and available (Linux): workers start at once and share the loaded matcher;
    ``spawn`` elsewhere (macOS, Windows), where each worker loads the saved matcher."""
    return "fork" if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods() else "spawn"


class WorkPool:
    """Runs tasks in worker processes or, with one worker, in this process.

    Forked workers inherit the loaded matcher; spawned ones load it once from ``pipeline_dir``. Results come
    back in task order, so the corpus is the same for any number of workers; at most ``4 × workers`` tasks are
    in flight, so memory does not grow with the input. An ad or line that raises gives a ``Failure`` in place of
    its result; with ``fail_fast`` its exception ends the build.
    """

    def __init__(self, workers: int, pipeline_dir: Optional[Path], labeller: SentenceLabeller,
                 start_method: Optional[str] = None, fail_fast: bool = False):
        self.workers = workers
        self.labeller = labeller
        self.fail_fast = fail_fast
        self.pool = None
        if workers == 1:
            return
        method = start_method or default_start_method()
        context = multiprocessing.get_context(method)
        if method == "fork":
            # Forked workers inherit the loaded matcher: no import or load per worker.
            global _WORKER
            _WORKER = labeller
            self.pool = context.Pool(workers)
        else:
            if pipeline_dir is None:
                raise ValueError(f"start method '{method}' needs the matcher saved to a folder")
            self.pool = context.Pool(workers, initializer=_init_worker,
                                     initargs=(str(pipeline_dir), labeller.settings))

    def clean(self, tasks: Iterable[Tuple[Any, List[str]]], max_line_chars: int) -> Iterator[Tuple[Any, list]]:
        """(meta, cleaned ads or failures) per task of (meta, ad texts), in task order."""
        if self.pool is None:
            return ((meta, clean_ads(texts, max_line_chars, self.fail_fast)) for meta, texts in tasks)
        return self._ordered(_worker_clean, ((meta, (texts, max_line_chars, self.fail_fast)) for meta, texts in tasks))

    def label(self, tasks: Iterable[Tuple[Any, List[str]]]) -> Iterator[Tuple[Any, list]]:
        """(meta, labelled lines or failures) per task of (meta, lines), in task order."""
        if self.pool is None:
            return ((meta, self.labeller.label_lines(lines, self.fail_fast)) for meta, lines in tasks)
        return self._ordered(_worker_label, ((meta, (lines, self.fail_fast)) for meta, lines in tasks))

    def _ordered(self, func: Callable, tasks: Iterable[Tuple[Any, Any]]) -> Iterator[Tuple[Any, Any]]:
        pending: deque = deque()
        for meta, payload in tasks:
            pending.append((meta, self.pool.apply_async(func, (payload,))))
            if len(pending) >= 4 * self.workers:
                meta_done, result = pending.popleft()
                yield meta_done, result.get()
        while pending:
            meta_done, result = pending.popleft()
            yield meta_done, result.get()

    def close(self) -> None:
        self._shut(terminate=False)

    def terminate(self) -> None:
        self._shut(terminate=True)

    def _shut(self, terminate: bool) -> None:
        global _WORKER
        if self.pool is not None:
            if terminate:
                self.pool.terminate()
            else:
                self.pool.close()
            self.pool.join()
            self.pool = None
        _WORKER = None  # the forked workers' copy; don't keep the matcher alive here
