"""``serve``: the HTTP API over a real pipeline (FastAPI's TestClient), its refusals of bad input, concurrent
requests, and the page driven in headless Chromium (marker ``browser``)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import spacy
from typer.testing import CliRunner

from bad_input import MARKER, add_poison, ads_with_poison
from pipeline.commands.cli import app
from pipeline.commands.extract import doc_to_record
from pipeline.commands.serve_requests import ServeSettings, body_limit
from pipeline.io.records import CSV_COLUMNS

fastapi = pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install '.[serve]'")
from fastapi.testclient import TestClient  # noqa: E402 - after the skip

from pipeline.commands.serve import create_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_AD = ROOT / "corpora" / "fixtures" / "sample_job_ad.html"
SETTINGS = ServeSettings(max_chars=2000, max_batch=4)
AD = "<p>Our team needs you to manage budgets.</p><p>Python experience helps.</p>"
HTML, TEXT, JSON = ({"content-type": "text/html"}, {"content-type": "text/plain; charset=utf-8"},
                    {"content-type": "application/json"})


@pytest.fixture(scope="module")
def client(pipeline_nlp):
    with TestClient(create_app(pipeline_nlp, SETTINGS)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def poisoned_client(matcher_dir):
    with TestClient(create_app(add_poison(spacy.load(matcher_dir)), SETTINGS)) as test_client:
        yield test_client


# ------------------------------------------------------------------------------------------ the endpoints
def test_extract_answers_extracts_record_for_text_html_and_json(client, pipeline_nlp, uri_of):
    expected = doc_to_record(pipeline_nlp(AD), "ad")
    assert client.post("/extract", content=AD, headers=HTML).json() == expected
    assert client.post("/extract?id=job-7", content=AD, headers=TEXT).json() == {**expected, "id": "job-7"}
    record = client.post("/extract", json={"id": "job-8", "description": AD, "source": "x"}).json()
    assert record == {**expected, "id": "job-8"}
    assert uri_of("manage budgets") in [skill["uri"] for skill in record["skills"]]


def test_batch_answers_every_ad_in_order(client, pipeline_nlp):
    ads = [{"id": "a", "description": AD}, "Manage budgets.", {"description": "Use spreadsheets."}]
    records = client.post("/extract/batch", json=ads).json()
    assert [record["id"] for record in records] == ["a", "ad-2", "ad-3"]
    assert records[1] == doc_to_record(pipeline_nlp("Manage budgets."), "ad-2")
    assert records[0]["skills"] == client.post("/extract", content=AD, headers=HTML).json()["skills"]


def test_health_names_the_model_its_components_and_the_esco_version(client, pipeline_nlp):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["pipeline"] == pipeline_nlp.pipe_names
    assert health["esco_version"] == "v1.1.1" and health["model"]["name"] == "en_pipeline"
    assert health["limits"] == {"max_chars": 2000, "max_batch": 4}


def test_csv_holds_extracts_rows_of_the_set(client, uri_of):
    ads = [{"id": "a", "description": AD}, {"id": "b", "description": "Nothing."}]
    response = client.post("/extract.csv", json=ads)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert {(row[0], row[1]) for row in rows[1:] if row[4] == "True"} == {
        ("a", uri_of("manage budgets")), ("a", uri_of("Python (computer programming)"))}
    ranked = list(csv.reader(io.StringIO(client.post("/extract.csv?ranking=true", content=AD, headers=HTML).text)))
    assert len(ranked) > len(rows) - 1  # every ranked row of the one ad: more than its set


def test_the_view_escapes_markup_in_the_ad(client):
    # entities decode to "<script>" in doc.text: the view must show it as text, never run it
    ad = "<p>Manage budgets &lt;script&gt;alert(1)&lt;/script&gt; &amp; more.</p>"
    record = client.post("/extract", content=ad, headers=HTML).json()
    assert "<script>alert(1)</script>" in record["sentences"][0]["text"]
    view = client.post("/extract.html", content=ad, headers=HTML).text
    assert "<script" not in view and "&lt;script&gt;alert(1)&lt;/script&gt; &amp;amp; more." not in view
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more." in view


def test_the_page_has_the_form_and_needs_nothing_from_outside(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="esco-form"' in page.text and 'data-max-chars="2000"' in page.text and "ESCO v1.1.1" in page.text
    assert "src=" not in page.text and "<link" not in page.text  # no CDN: the page works offline


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("path,headers,body,status", [
    ("/extract", TEXT, b"", 400),
    ("/extract", HTML, b"  \n\t", 400),
    ("/extract", JSON, b'{"description": "Manage budgets.", ', 400),
    ("/extract", JSON, b"\xff\xfe{", 400),
    ("/extract", JSON, b'{"text": "Manage budgets."}', 422),
    ("/extract", JSON, b'{"description": 7}', 422),
    ("/extract", JSON, b'{"description": "  "}', 400),
    ("/extract", JSON, b'[{"description": "Manage budgets."}]', 422),
    ("/extract", {"content-type": "application/xml"}, b"<ad>Manage budgets.</ad>", 415),
    ("/extract", {"content-type": "application/x-www-form-urlencoded"}, b"ad=Manage+budgets", 415),
    ("/extract", TEXT, b"a" * 2001, 413),
    ("/extract", TEXT, b"a" * (body_limit(SETTINGS, False) + 1), 413),
    ("/extract/batch", JSON, json.dumps(["Manage budgets."] * 5).encode(), 413),
    ("/extract/batch", JSON, b"[]", 422),
    ("/extract/batch", JSON, b'{"description": "Manage budgets."}', 422),
    ("/extract/batch", JSON, b'["Manage budgets.", 3]', 422),
    ("/extract/batch", TEXT, b"Manage budgets.", 415),
    ("/extract.csv", JSON, b"nope", 400),
    ("/extract.html", TEXT, b"", 400),
])
def test_bad_input_gets_a_clear_4xx(client, path, headers, body, status):
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["detail"] and answer["error"] and "Traceback" not in response.text


def test_a_failing_ad_fails_alone_with_its_error_and_no_traceback(poisoned_client):
    response = poisoned_client.post("/extract?id=p", content=f"A {MARKER} ad.", headers=TEXT)
    assert response.status_code == 500 and "Traceback" not in response.text
    assert response.json() == {"error": "PoisonedAdError", "detail": f"poisoned text: 'A {MARKER} ad.'", "id": "p"}
    records = poisoned_client.post("/extract/batch", json=ads_with_poison(2, poison_at=1)).json()
    assert [record["id"] for record in records] == ["good0", "poison", "good1"]
    assert records[1]["error"] == "PoisonedAdError" and "skills" not in records[1]
    assert records[0]["skills"] and records[2]["skills"]


def test_concurrent_requests_are_all_answered_as_one_at_a_time(client):
    ads = [f"Ad {i}: you will manage budgets.\nPython and SQL for project {i}." for i in range(8)]
    sequential = [client.post("/extract", json={"id": str(i), "description": ad}).json() for i, ad in enumerate(ads)]
    start = threading.Barrier(len(ads))

    def post(i: int) -> dict:
        start.wait()
        response = client.post("/extract", json={"id": str(i), "description": ads[i]})
        assert response.status_code == 200
        return response.json()

    with ThreadPoolExecutor(len(ads)) as pool:
        concurrent = list(pool.map(post, range(len(ads))))
    assert concurrent == sequential


# ------------------------------------------------------------------------------------------ the command
def test_the_base_install_does_not_import_the_web_framework():
    code = "import sys, pipeline, pipeline.commands.cli; print(sorted({'fastapi', 'uvicorn'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_cli_serve_without_the_extra_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # what Python does for a package that is not installed
    result = CliRunner().invoke(app, ["serve", "no-such-model"])
    assert result.exit_code == 2 and 'pip install ".[serve]"' in result.output


def test_cli_serve_checks_its_limits():
    result = CliRunner().invoke(app, ["serve", "no-such-model", "--max-chars", "0"])
    assert result.exit_code == 2 and "max_chars must be >= 1, got 0" in result.output


# ------------------------------------------------------------------------------------------ the browser
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(request):
    """uvicorn serving the app on a free port in a thread: the session's pipeline, or the one in SERVE_MODEL (to
    take the docs' screenshot with the trained model)."""
    import uvicorn

    model = os.environ.get("SERVE_MODEL")
    nlp = spacy.load(model) if model else request.getfixturevalue("pipeline_nlp")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(nlp), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("Chromium or chromedriver is missing: `make browser-deps` installs them (apt-get install "
                    "chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install '.[dev]'")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--hide-scrollbars"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    yield driver
    driver.quit()


@pytest.mark.browser
@pytest.mark.skipif(sys.platform != "linux", reason="the browser tier runs on Linux (Debian's Chromium)")
def test_the_page_in_a_browser_shows_the_ad_as_written_with_its_skills(live_server, browser, uri_of, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(live_server)
    textarea = browser.find_element(By.ID, "esco-ad")
    browser.execute_script("arguments[0].value = arguments[1];", textarea, SAMPLE_AD.read_text(encoding="utf-8"))
    browser.find_element(By.ID, "esco-submit").click()
    WebDriverWait(browser, 60).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".esco-ad")))
    uri = uri_of("manage budgets")
    marks = [mark for mark in browser.find_elements(By.CSS_SELECTOR, "mark.esco-span")
             if uri in (mark.get_attribute("data-uris") or "").split()]
    assert [mark.text for mark in marks] == ["manage budgets"] and marks[0].is_displayed()
    assert "manage budgets" in marks[0].get_attribute("title")
    lines = [row.text for row in browser.find_elements(By.CSS_SELECTOR, ".esco-sentence-text")]
    assert "Help the office manager manage budgets for stationery and agency cover." in lines
    assert "Book appointments, manage the consultants’ diaries and arrange multidisciplinary team meetings." in lines
    assert not any(" ," in line or " ." in line for line in lines)  # the ad as written, not as tokens
    skipped = browser.find_elements(By.CSS_SELECTOR, ".esco-skipped .esco-reason")
    assert skipped and all(reason.text.startswith("asks for no skill") for reason in skipped)
    height, chrome = browser.execute_script("return [document.documentElement.scrollHeight, "
                                            "window.outerHeight - window.innerHeight]")
    browser.set_window_size(1280, min(height + chrome + 16, 4000))  # the whole page in the screenshot
    browser.save_screenshot(os.environ.get("SERVE_SCREENSHOT") or str(tmp_path / "serve.png"))
