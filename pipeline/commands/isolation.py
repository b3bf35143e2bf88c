"""Per-ad isolation for ``nlp.pipe``: an ad whose processing raises fails alone, the others go on.

``nlp.pipe`` is a chain of generators (with ``n_process`` > 1, worker processes): one exception from any ad's text,
in the tokenizer or in any component, ends it, and every ad after it is lost. ``pipe_isolated`` runs ``nlp.pipe``
over the ads as usual and notes which ads it has taken but not yet given back. When it raises, those ads (about
one batch; with ``n_process`` > 1, the batches in flight) are the suspects: they are run again in this process, a
batch at a time and then ad by ad, so that the ad that raises is found, reported once with its real exception
(a worker's comes back as spaCy's ValueError E871 carrying the traceback as text) and every other suspect is
processed. Then ``nlp.pipe`` starts again on the ads not yet taken.

The cost is nothing while no ad fails; a failure costs a batch run again, ad by ad (and, with ``n_process`` > 1,
new worker processes). An ad run alone goes through the same ``nlp.pipe``; encoders may differ from its batched
run in the last float digits. ``fail_fast`` raises the first exception instead, as ``nlp.pipe`` does (debugging).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Generic, Iterable, Iterator, List, Optional, TypeVar

from spacy.language import Language
from spacy.tokens import Doc

from pipeline.io.failures import FailedAd
from pipeline.io.jobads import JobAd

T = TypeVar("T")


@dataclass(frozen=True)
class AdOutcome(Generic[T]):
    """One ad's result: what ``finish`` made of its doc, or why it failed (exactly one of the two is set)."""

    ad: JobAd
    result: Optional[T] = None
    failure: Optional[FailedAd] = None


def pipe_isolated(nlp: Language, ads: Iterable[JobAd], finish: Callable[[Doc, JobAd], T], *, batch_size: int = 32,
                  n_process: int = 1, fail_fast: bool = False) -> Iterator[AdOutcome[T]]:
    """One outcome per ad, in input order: ``finish(doc, ad)`` (e.g. the output record), or the ad's ``FailedAd``
    when ``nlp`` or ``finish`` raised on it (module docstring). An exception that is no ad's — from iterating
    ``ads`` itself, or before any ad was taken — is raised."""
    source = iter(ads)
    while True:
        taken: Deque[JobAd] = deque()
        feed = _Feed(source, taken)
        try:
            for doc in nlp.pipe(feed, batch_size=batch_size, n_process=n_process):
                ad = taken.popleft()
                yield _finished(doc, ad, finish, fail_fast)
            return
        except Exception:
            if fail_fast or feed.error is not None or not taken:
                raise
        suspects = list(taken)
        if n_process > 1:  # the batches in flight: find the failing batch in this process first
            yield from pipe_isolated(nlp, suspects, finish, batch_size=batch_size)
        else:
            yield from (_alone(nlp, ad, finish) for ad in suspects)


class _Feed:
    """The texts of ``source`` for ``nlp.pipe``; each ad is noted in ``taken`` as it is handed over, and an
    exception of ``source`` itself is kept in ``error`` (it is no ad's: ``pipe_isolated`` raises it)."""

    def __init__(self, source: Iterator[JobAd], taken: Deque[JobAd]):
        self.source, self.taken = source, taken
        self.error: Optional[BaseException] = None

    def __iter__(self) -> Iterator[str]:
        while True:
            try:
                ad = next(self.source)
            except StopIteration:
                return
            except Exception as err:
                self.error = err
                raise
            self.taken.append(ad)
            yield ad.text


def _finished(doc: Doc, ad: JobAd, finish: Callable[[Doc, JobAd], T], fail_fast: bool) -> AdOutcome[T]:
    """``finish`` of one ad, or its failure (nothing of the ad is written before ``finish`` returns)."""
    try:
        return AdOutcome(ad, result=finish(doc, ad))
    except Exception as err:
        if fail_fast:
            raise
        return AdOutcome(ad, failure=FailedAd.of(ad, err))


def _alone(nlp: Language, ad: JobAd, finish: Callable[[Doc, JobAd], T]) -> AdOutcome[T]:
    """One suspect run by itself: its outcome, and if it raises, its failure with the real exception."""
    try:
        docs: List[Doc] = list(nlp.pipe([ad.text], batch_size=1))
    except Exception as err:
        return AdOutcome(ad, failure=FailedAd.of(ad, err))
    return _finished(docs[0], ad, finish, fail_fast=False)
