"""``serve``: the pipeline behind a small HTTP API and a page to paste an ad into (FastAPI + uvicorn, the ``serve``
extra: ``pip install ".[serve]"``).

Endpoints (``create_app``):

- ``POST /extract``: one ad — ``text/plain``, ``text/html`` (its id from ``?id=``), or ``application/json`` in the
  JSON Lines record shape ``extract`` reads (``{"id": ..., "description": ...}``, fields as configured) — gives
  exactly ``extract``'s output record for it (``commands.extract.doc_to_record``).
- ``POST /extract/batch``: a JSON list of such records (or of plain strings), at most ``max_batch``: a list of
  records in the same order; an ad whose processing raised is ``{"id", "error", "message"}`` in its place (its
  ``FailedAd``), as ``extract`` lists it in its failed file, and the others are answered.
- ``POST /extract.csv``: one ad or a JSON list: the CSV ``extract --csv`` writes (``?ranking=true``: every ranked
  row). ``POST /extract.html``: one ad's view (``commands.render``), what the page shows.
- ``GET /health``: the model's name and version, its components, the ESCO version, the limits.
- ``GET /``: the page (``commands.render``'s template with a form; plain JavaScript, no CDN).

Bad input gets a JSON error ``{"error": kind, "detail": message}`` with a 4xx: 400 an empty body or ad, 400 JSON
that does not parse, 422 JSON of the wrong shape, 413 an ad over ``max_chars`` characters (or a batch over
``max_batch`` ads), 415 any other content type. An ad whose processing raises is isolated as ``extract`` isolates it
(``commands.isolation``): a 500 JSON with the error's class and message, never a traceback.

The pipeline is loaded once; requests run it in a worker thread, one at a time behind a lock (a spaCy pipeline is not
promised to be thread-safe, and the encoder uses every core anyway), so concurrent requests wait, and lose nothing.
Nothing here is imported by ``import pipeline``; FastAPI is imported when an app is made.
"""

# no ``from __future__ import annotations``: FastAPI reads the routes' annotations at runtime
import threading
from http import HTTPStatus
from typing import Any, Callable, Dict, List, Optional, TypeVar, Union

from spacy.language import Language
from spacy.tokens import Doc

from pipeline import ESCO_ATTRIBUTION, __version__
from pipeline.commands.extract import doc_to_record, per_ad_warnings_silenced
from pipeline.commands.isolation import AdOutcome, pipe_isolated
from pipeline.commands.render import csv_text, render_ad, render_page, template
from pipeline.components.pipes import MATCHER
from pipeline.commands.serve_requests import SOURCE, RejectedRequest, ServeSettings, body_limit, parse_ads
from pipeline.errors import EscoSkillsError, MissingDependencyError
from pipeline.io.jobads import JobAd

T = TypeVar("T")
WARM_UP = "Manage budgets and use spreadsheets."  # run once at start-up, so that the first request is not slow


class AdProcessingError(EscoSkillsError, RuntimeError):
    """The pipeline raised on a served ad (``FailedAd``: the error's class and message): a 500 without traceback."""

    def __init__(self, failure: Dict[str, Any]):
        super().__init__(failure["message"])
        self.failure = failure


# ---------------------------------------------------------------------------------------------- the pipeline
class Extractor:
    """The loaded pipeline and the lock that lets one request at a time run it."""

    def __init__(self, nlp: Language, settings: ServeSettings):
        self.nlp, self.settings = nlp, settings
        self.lock = threading.Lock()

    def run(self, ads: List[JobAd], finish: Callable[[Doc, JobAd], T]) -> List[AdOutcome[T]]:
        """``finish(doc, ad)`` for every ad in order, or its failure (``pipe_isolated``: one bad ad fails alone).
        Call it from a worker thread: it holds the lock for the whole run."""
        with self.lock, per_ad_warnings_silenced():
            return list(pipe_isolated(self.nlp, ads, finish, batch_size=self.settings.batch_size))

    def health(self) -> Dict[str, Any]:
        """What ``GET /health`` says: which model, components, ESCO version and limits."""
        meta = self.nlp.meta
        return {"status": "ok", "package_version": __version__,
                "model": {"name": f"{meta.get('lang', '')}_{meta.get('name', '')}", "version": meta.get("version")},
                "pipeline": list(self.nlp.pipe_names), "esco_version": esco_version(self.nlp),
                "limits": {"max_chars": self.settings.max_chars, "max_batch": self.settings.max_batch}}


def esco_version(nlp: Language) -> Optional[str]:
    """The ESCO release of the pipeline: the trained meta's, else the matcher's taxonomy's (an assembled one)."""
    version = (nlp.meta.get("esco") or {}).get("version")
    if not version and MATCHER in nlp.pipe_names:
        version = getattr(getattr(nlp.get_pipe(MATCHER), "taxonomy", None), "version", None)
    return version or None


def record_of(doc: Doc, ad: JobAd) -> Dict[str, Any]:
    return doc_to_record(doc, ad.id)


def answered(outcome: AdOutcome[T]) -> T:
    """The outcome's result; its failure as an ``AdProcessingError``."""
    if outcome.failure is not None:
        raise AdProcessingError(outcome.failure.to_dict())
    return outcome.result


def batch_item(outcome: AdOutcome[Dict[str, Any]]) -> Dict[str, Any]:
    """A batch's answer for one ad: its record, or ``{"id", "error", "message"}`` when it failed."""
    if outcome.failure is None:
        return outcome.result
    failure = outcome.failure
    return {"id": failure.id, "error": failure.error, "message": failure.message}


# ---------------------------------------------------------------------------------------------- the app
def web_framework():
    """The modules of FastAPI and uvicorn, or the error that says how to install the extra."""
    try:
        import fastapi
        import uvicorn
    except ImportError as err:
        raise MissingDependencyError(f"serve needs FastAPI and uvicorn: pip install \".[serve]\" ({err})") from None
    return fastapi, uvicorn


def create_app(nlp: Language, settings: ServeSettings = ServeSettings()):
    """The FastAPI app over a loaded pipeline (module docstring)."""
    fastapi, _ = web_framework()
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    extractor = Extractor(nlp, settings)
    app = fastapi.FastAPI(title="ESCO skills in job ads", version=__version__,
                          description=__doc__.split("\n\n")[0] + "\n\n" + ESCO_ATTRIBUTION)

    @app.exception_handler(RejectedRequest)
    async def rejected(_request, err: RejectedRequest):
        return JSONResponse({"error": HTTPStatus(err.status).phrase, "detail": str(err)}, status_code=err.status)

    @app.exception_handler(AdProcessingError)
    async def failed(_request, err: AdProcessingError):
        return JSONResponse({"error": err.failure["error"], "detail": err.failure["message"],
                             "id": err.failure["id"]}, status_code=500)

    @app.exception_handler(Exception)
    async def unexpected(_request, err: Exception):  # the last resort: a message, never a traceback
        return JSONResponse({"error": type(err).__name__, "detail": str(err)}, status_code=500)

    async def ads_of(request, many: Optional[bool]) -> List[JobAd]:
        body = await _read_body(request, body_limit(settings, many is not False))
        return parse_ads(body, request.headers.get("content-type", ""), settings, many=many,
                         ad_id=request.query_params.get("id"))

    async def run(ads: List[JobAd], finish: Callable[[Doc, JobAd], T]) -> List[AdOutcome[T]]:
        return await run_in_threadpool(extractor.run, ads, finish)

    @app.post("/extract", summary="One ad → extract's record")
    async def extract_one(request: fastapi.Request):
        return JSONResponse(answered((await run(await ads_of(request, False), record_of))[0]))

    @app.post("/extract/batch", summary="A JSON list of ads → their records")
    async def extract_batch(request: fastapi.Request):
        return JSONResponse([batch_item(outcome) for outcome in await run(await ads_of(request, True), record_of)])

    @app.post("/extract.csv", summary="One ad or a JSON list → extract's CSV of the set")
    async def extract_csv(request: fastapi.Request, ranking: bool = False):
        records = [answered(outcome) for outcome in await run(await ads_of(request, None), record_of)]
        return Response(csv_text(records, ranking), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="skills.csv"'})

    @app.post("/extract.html", summary="One ad → its view (what the page shows)", response_class=HTMLResponse)
    async def extract_html(request: fastapi.Request):
        named = request.query_params.get("id")  # the page sends none: its view is headed "The ad"
        ads = await ads_of(request, False)
        outcomes = await run(ads, lambda doc, _ad: render_ad(doc, settings.top_k, ad_id=named))
        return HTMLResponse(answered(outcomes[0]))

    @app.get("/health", summary="Model, components, ESCO version, limits")
    async def health():
        return extractor.health()

    page = render_page(form=_form(settings), subtitle=_subtitle(extractor.health()))

    @app.get("/", response_class=HTMLResponse, summary="The page: paste an ad, see its skills")
    async def index():
        return HTMLResponse(page)

    return app


async def _read_body(request, limit: int) -> bytes:
    """The body, refused with a 413 as soon as it is longer than ``limit`` bytes (before it is all in memory)."""
    declared = request.headers.get("content-length", "")
    too_long = RejectedRequest(413, f"the request body is over {limit:,} bytes (--max-chars, --max-batch)")
    if declared.isdigit() and int(declared) > limit:
        raise too_long
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_long
        chunks.append(chunk)
    return b"".join(chunks)


def _form(settings: ServeSettings) -> str:
    from string import Template

    return Template(template("form.html")).substitute(max_chars=settings.max_chars)


def _subtitle(health: Dict[str, Any]) -> str:
    model = health["model"]
    return (f"Paste an ad and see the ESCO skills it asks for. Model {model['name']} {model['version']} "
            f"({', '.join(health['pipeline'])}); ESCO {health['esco_version'] or '?'}. {ESCO_ATTRIBUTION}")


def serve(model: Union[str, Language], settings: ServeSettings = ServeSettings(), *, host: str = "127.0.0.1",
          port: int = 8000, config: Optional[Dict[str, Any]] = None, log_level: str = "info") -> None:
    """Load the pipeline once, run it on a short ad (so that the first request is not the slow one), and serve
    the app with uvicorn until interrupted."""
    from pipeline.components.pipes import load_pipeline

    _, uvicorn = web_framework()  # before the pipeline loads: a missing extra fails at once

    nlp = load_pipeline(model, config=config or {})
    Extractor(nlp, settings).run([JobAd("warm-up", WARM_UP, SOURCE)], record_of)
    uvicorn.run(create_app(nlp, settings), host=host, port=port, log_level=log_level)
