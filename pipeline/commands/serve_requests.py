"""What a request to ``serve`` may hold, and the ads in it: the server's settings and the parsing of a body into
``JobAd``s, with the HTTP status that refuses it (``RejectedRequest``).

Free of spaCy, torch and FastAPI, so that the command line reads the settings' defaults without loading any of
them (``serve`` builds the app around these functions).
"""

from __future__ import annotations

import json
from typing import Any, List, Optional

from pipeline.errors import EscoSkillsError
from pipeline.io.jobads import ID_FIELD, TEXT_FIELD, JobAd
from pipeline.io.text import repair_text
from pipeline.settings import Field, Settings, StrictInt, StrictStr

JSON_TYPES = ("application/json",)
TEXT_TYPES = ("text/plain", "text/html")
SOURCE = "request"  # a served ad's JobAd.source and .file: it came from no file
BYTES_PER_CHAR = 4  # UTF-8: a body may hold up to four bytes per character of its ad
JSON_OVERHEAD = 64 * 1024  # room for a record's other fields and escapes


class ServeSettings(Settings):
    """The server's limits and where an ad is in a JSON record."""

    max_chars: StrictInt = Field(100_000, ge=1, description="Longest ad, in characters (longer: 413).")
    max_batch: StrictInt = Field(64, ge=1, description="Most ads in one batch request (more: 413).")
    batch_size: StrictInt = Field(16, ge=1, description="nlp.pipe's batch size for a batch request.")
    top_k: StrictInt = Field(10, ge=1, description="Skills per list on the page.")
    text_field: StrictStr = Field(TEXT_FIELD, min_length=1, description="JSON field holding the ad text.")
    id_field: StrictStr = Field(ID_FIELD, min_length=1, description="JSON field holding the ad id.")


class RejectedRequest(EscoSkillsError, ValueError):
    """A request the server will not run: its HTTP status and a message that says what to send instead."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def body_limit(settings: ServeSettings, batch: bool) -> int:
    """The most bytes a request body may hold: its ads at their longest, with room for JSON."""
    ads = settings.max_batch if batch else 1
    return ads * (settings.max_chars * BYTES_PER_CHAR + JSON_OVERHEAD)


def parse_ads(body: bytes, content_type: str, settings: ServeSettings, *, many: Optional[bool],
              ad_id: Optional[str] = None) -> List[JobAd]:
    """The ads of a request body. ``many``: True a JSON list, False one ad, None either. Raises
    ``RejectedRequest`` with the status the module docstring lists."""
    media = content_type.split(";")[0].strip().lower()
    if not body.strip():
        raise RejectedRequest(400, "empty body: send the ad as text/plain, text/html or application/json")
    if media in TEXT_TYPES and many is not True:
        return [_ad(body.decode("utf-8", errors="replace"), ad_id or "ad", settings, "the ad")]
    if media not in JSON_TYPES and not media.endswith("+json"):
        wanted = "application/json (a list of ads)" if many else "text/plain, text/html or application/json"
        raise RejectedRequest(415, f"unsupported content type {media or '(none)'!r}: send {wanted}")
    try:
        value = json.loads(body)
    except ValueError as err:  # JSONDecodeError, and UnicodeDecodeError for bytes that are no JSON text
        raise RejectedRequest(400, f"malformed JSON: {err}") from None
    if isinstance(value, list) and many is not False:
        return _batch(value, settings)
    if many:
        raise RejectedRequest(422, "a batch is a JSON list of ads (objects in the JSON Lines record shape, or strings)")
    return [_record_ad(value, ad_id or "ad", settings, "the ad")]


def _batch(values: List[Any], settings: ServeSettings) -> List[JobAd]:
    if not values:
        raise RejectedRequest(422, "an empty list: send at least one ad")
    if len(values) > settings.max_batch:
        raise RejectedRequest(413, f"{len(values)} ads in one batch; this server takes at most "
                                   f"{settings.max_batch} (--max-batch)")
    return [_record_ad(value, f"ad-{i}", settings, f"ad {i} of the list") for i, value in enumerate(values, start=1)]


def _record_ad(value: Any, default_id: str, settings: ServeSettings, where: str) -> JobAd:
    """An ad from a JSON value: a record with the text field (and maybe the id field), or a plain string."""
    if isinstance(value, str):
        return _ad(value, default_id, settings, where)
    if not isinstance(value, dict):
        raise RejectedRequest(422, f"{where}: expected an object with a {settings.text_field!r} field, got "
                                   f"{type(value).__name__}")
    text = value.get(settings.text_field)
    if not isinstance(text, str):
        found = "missing" if text is None else f"a {type(text).__name__}"
        raise RejectedRequest(422, f"{where}: the text field {settings.text_field!r} must be a string, it is {found}")
    ad_id = value.get(settings.id_field)
    return _ad(text, str(ad_id) if isinstance(ad_id, (str, int)) and str(ad_id) else default_id, settings, where)


def _ad(text: str, ad_id: str, settings: ServeSettings, where: str) -> JobAd:
    text = repair_text(text).text
    if not text.strip():
        raise RejectedRequest(400, f"{where} is empty")
    if len(text) > settings.max_chars:
        raise RejectedRequest(413, f"{where} has {len(text):,} characters; this server reads at most "
                                   f"{settings.max_chars:,} (--max-chars)")
    return JobAd(repair_text(ad_id).text, text, SOURCE, file=SOURCE)
