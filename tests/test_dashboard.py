"""The queue dashboard in headless Chromium against a real stack: live counts and jobs, retry, delete, cancel."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import time
import uuid

import pytest

from conftest import AUDIO, clip, running_stack, wait_until

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def dash(tmp_path_factory, redis_server, models_ready):
    """Web tier only: each test starts the workers it needs, so a job can be made to wait."""
    tmp = tmp_path_factory.mktemp("dashboard")
    # No warm-up: workers are started and stopped several times here; tiny.en loads quickly on first use.
    with running_stack(tmp, redis_server, PARLEY_WARMUP="0") as s:
        s.clip = clip(AUDIO / "two_speakers.mp3", tmp / "two_speakers_8s.mp3", 0, 8)
        yield s


@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        pytest.skip(f"headless browser test needs Debian's chromium and chromium-driver; missing {missing} "
                    "(scripts/bootstrap --test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1200"):
        options.add_argument(arg)
    # An explicit chromedriver: Selenium Manager would otherwise try to download one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


# --- helpers ---------------------------------------------------------------------------------------
def stop_workers(stack) -> None:
    for worker in stack.workers.values():
        worker.stop()
    wait_until(lambda: stack.heartbeats() == 0, timeout=30, what="worker heartbeats to go")


def start_asr_worker(stack, name: str, **env: str):
    saved = dict(stack.env)
    stack.env.update(env)
    try:
        return stack.start_worker(name, "asr")
    finally:
        stack.env.clear()
        stack.env.update(saved)


def state(stack) -> dict:
    answer = stack.get("/dashboard/state")
    assert answer.status_code == 200, answer.text
    return answer.json()


def queue(stack, name: str) -> dict:
    return next(q for q in state(stack)["queues"] if q["name"] == name)


def job_row(stack, job_id: str) -> dict | None:
    return next((j for j in state(stack)["jobs"] if j["id"] == job_id), None)


def upload(stack, **fields) -> str:
    answer = stack.upload(stack.clip, model_name="tiny.en", **fields)
    assert answer.status_code == 200, answer.text
    return answer.json()["job_id"]


def text(browser, css: str) -> str | None:
    """The text of the first element matching `css`, or None (the page redraws rows on every snapshot)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return browser.find_element(By.CSS_SELECTOR, css).text
    except (NoSuchElementException, StaleElementReferenceException):
        return None


def shows(browser, css: str, expected, *, timeout: float = 10) -> None:
    """Wait until the element at `css` shows `expected` (its text, or a predicate of it): a single read can land
    on a redraw and find nothing."""
    check = expected if callable(expected) else (lambda shown: shown == expected)
    wait_until(lambda: check(text(browser, css)), timeout=timeout, what=f"{css} to show {expected!r}")


def attribute(browser, css: str, name: str) -> str | None:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return browser.find_element(By.CSS_SELECTOR, css).get_attribute(name)
    except (NoSuchElementException, StaleElementReferenceException):
        return None


def click(browser, css: str) -> bool:
    from selenium.common.exceptions import (ElementClickInterceptedException, NoSuchElementException,
                                            StaleElementReferenceException)
    from selenium.webdriver.common.by import By

    try:
        browser.find_element(By.CSS_SELECTOR, css).click()
        return True
    except (NoSuchElementException, StaleElementReferenceException, ElementClickInterceptedException):
        return False


def open_dashboard(browser, stack) -> None:
    browser.get(stack.url("/dashboard"))
    wait_until(lambda: text(browser, "#live") == "live", timeout=20, what="the page's live stream")
    # Survives only as long as the page is not reloaded: the checks below prove updates arrive without one.
    browser.execute_script("window.notReloaded = true;")


def not_reloaded(browser) -> bool:
    return browser.execute_script("return window.notReloaded === true;")


# --- tests -----------------------------------------------------------------------------------------
def test_cancel_and_unknown_ids_through_the_json_endpoints(dash):
    stop_workers(dash)
    job_id = upload(dash, diarize="false")
    assert queue(dash, "asr")["waiting"] == 1
    row = job_row(dash, job_id)
    assert row["status"] == "queued" and row["cancelable"] and row["queue"] == "asr"

    answer = dash.post(f"/dashboard/jobs/{job_id}/cancel")
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "canceled"
    assert dash.get(f"/api/transcribe/status/{job_id}").json()["state"] == "canceled"
    # The waiting message went with it, and the row can no longer be canceled.
    assert queue(dash, "asr")["waiting"] == 0
    row = job_row(dash, job_id)
    assert row["status"] == "canceled" and not row["cancelable"]
    # Rows store epoch milliseconds; the dashboard speaks epoch seconds.
    assert abs(row["created_at"] - time.time()) < 600 and row["created_at"] <= row["finished_at"] <= time.time() + 1

    again = dash.post(f"/dashboard/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "already canceled" in again.json()["message"]
    unknown = dash.post(f"/dashboard/jobs/{uuid.uuid4()}/cancel")
    assert unknown.status_code == 404 and "no transcription, LLM or analysis job" in unknown.json()["message"]
    assert dash.post("/dashboard/jobs/424242/cancel").status_code == 404  # an analysis job id

    no_queue = dash.post("/dashboard/dead-letters/nope/abc/retry")
    assert no_queue.status_code == 404 and "unknown queue 'nope'" in no_queue.json()["message"]
    assert "asr, asr_quick, io, llm" in no_queue.json()["message"]
    for response in (dash.post("/dashboard/dead-letters/asr/abc/retry"), dash.session.delete(
            dash.url("/dashboard/dead-letters/asr/abc"), timeout=30)):
        assert response.status_code == 404 and "no dead letter 'abc'" in response.json()["message"]



def test_cancel_an_llm_job_through_the_dashboard(dash):
    """A queued LLM job ends canceled at once; a running one is asked to stop through its Redis cancel key."""
    stop_workers(dash)
    queued, running = str(uuid.uuid4()), str(uuid.uuid4())
    # The rows as the web tier would have queued them (no LLM worker in this stack, so none would run).
    with sqlite3.connect(dash.data_dir / "parley.db") as conn:
        for job_id, status in ((queued, "queued"), (running, "processing")):
            conn.execute("INSERT INTO llm_job (id, kind, status, message, progress, model_name, params, created_at_ms,"
                         " updated_at_ms) VALUES (?, 'summary', ?, '', 0, 'gemma', '{}', ?, ?)",
                         (job_id, status, int(time.time() * 1000), int(time.time() * 1000)))
    answer = dash.post(f"/dashboard/jobs/{queued}/cancel")
    assert answer.status_code == 202 and answer.json()["status"] == "canceled", answer.text
    asked = dash.post(f"/dashboard/jobs/{running}/cancel")
    assert asked.status_code == 202 and asked.json()["status"] == "processing"
    assert asked.json()["message"] == f"Cancellation of LLM job {running} requested"
    db = dash.env["REDIS_URL"].rsplit("/", 1)[1]
    key = subprocess.run(["redis-cli", "-p", str(dash.redis.port), "-n", db, "EXISTS", f"parley:cancel:{running}"],
                         capture_output=True, text=True, timeout=5).stdout.strip()
    assert key == "1"  # what the LLM worker checks between tokens
    again = dash.post(f"/dashboard/jobs/{queued}/cancel")
    assert again.status_code == 409 and "already canceled" in again.json()["message"]
    with sqlite3.connect(dash.data_dir / "parley.db") as conn:  # no worker will end it: leave no running row
        conn.execute("UPDATE llm_job SET status = 'canceled' WHERE id = ?", (running,))

def test_page_shows_a_job_moving_from_waiting_to_done(dash, browser):
    stop_workers(dash)
    open_dashboard(browser, dash)
    shows(browser, '#queues tr[data-queue="asr"] td[data-count="waiting"]', "0")
    shows(browser, "#workers", lambda shown: "no worker is alive" in (shown or ""))

    job_id = upload(dash, diarize="false")
    row = f'#jobs tr[data-job-id="{job_id}"]'
    wait_until(lambda: text(browser, '#queues tr[data-queue="asr"] td[data-count="waiting"]') == "1", timeout=15,
               what="the asr waiting count to show 1")
    wait_until(lambda: text(browser, f"{row} .status") == "queued", timeout=15, what="the job's row, queued")
    shows(browser, f'{row} button[data-action="cancel"]', "Cancel")

    start_asr_worker(dash, "asr")
    wait_until(lambda: text(browser, f"{row} .status") == "completed", timeout=240, what="the job's row, completed")
    shows(browser, row, lambda shown: "100%" in (shown or ""))
    shows(browser, '#queues tr[data-queue="asr"] td[data-count="waiting"]', "0")
    assert text(browser, f'{row} button[data-action="cancel"]') is None
    # The worker is listed, with its queue and its device.
    wait_until(lambda: text(browser, "#workers tbody tr[data-worker]"), timeout=15, what="a worker row")
    cells = wait_until(lambda: browser.execute_script(
        "return [...document.querySelectorAll('#workers tbody tr[data-worker] td')].map(td => td.textContent);"),
        timeout=5, what="worker cells")
    assert cells[1] == "asr" and cells[2], cells  # device: cpu, auto or the CUDA devices it was given
    assert not_reloaded(browser)
    assert dash.get(f"/api/transcribe/status/{job_id}").json()["status"] == "completed"


def test_dead_letter_retry_button_and_delete(dash, browser):
    # A worker without speaker diarization fails jobs that ask for speakers: a real dead letter each.
    stop_workers(dash)
    start_asr_worker(dash, "asr-no-diarization", PARLEY_DIARIZATION="0")
    retried, deleted = upload(dash, diarize="true"), upload(dash, diarize="true")
    for job_id in (retried, deleted):
        assert dash.wait_job(job_id)["status"] == "failed"
    def asr_letters():
        found = [d for d in state(dash)["dead_letters"] if d["queue"] == "asr"]
        return found if len(found) >= 2 else None

    letters = wait_until(asr_letters, timeout=30, what="two dead letters on asr")
    by_job = {d["args"][0]: d for d in letters}
    assert set(by_job) == {retried, deleted}
    assert all(d["actor"] == "transcribe" and "diarization" in d["error"] for d in letters), letters
    assert queue(dash, "asr")["dead"] == 2

    # Delete through the JSON endpoint: gone from the dead letters, the job stays failed. Here its row is made
    # unfinished first, as when a worker died before it could record the failure: deleting the letter must
    # fail the job, or the reconciler would find a row without a message and send the job again.
    with sqlite3.connect(dash.data_dir / "parley.db") as conn:
        conn.execute("UPDATE job SET status = 'processing', error = NULL WHERE id = ?", (deleted,))
    gone = dash.session.delete(dash.url(f"/dashboard/dead-letters/asr/{by_job[deleted]['message_id']}"), timeout=30)
    assert gone.status_code == 200 and gone.json()["deleted"] is True and gone.json()["failed_job_id"] == deleted
    dropped = dash.get(f"/api/transcribe/status/{deleted}").json()
    assert dropped["status"] == "failed" and "Dropped by the operator" in dropped["error"], dropped
    assert dash.session.delete(dash.url(f"/dashboard/dead-letters/asr/{by_job[deleted]['message_id']}"),
                               timeout=30).status_code == 404
    assert queue(dash, "asr")["dead"] == 1
    assert dash.get(f"/api/transcribe/status/{deleted}").json()["status"] == "failed"

    # The operator fixes the workers (diarization back on), then presses Retry on the page.
    stop_workers(dash)
    start_asr_worker(dash, "asr-fixed")
    open_dashboard(browser, dash)
    message_id = by_job[retried]["message_id"]
    letter = f'#dead-letters tr[data-message-id="{message_id}"]'
    shows(browser, letter, lambda shown: retried in (shown or "") and "diarization" in shown)
    shows(browser, '#queues tr[data-queue="asr"] td[data-count="dead"]', "1")
    shows(browser, f'#jobs tr[data-job-id="{retried}"] .status', "failed")
    wait_until(lambda: click(browser, f'{letter} button[data-action="retry"]'), timeout=10, what="the Retry click")

    wait_until(lambda: text(browser, letter) is None, timeout=15, what="the dead letter to leave the page")
    wait_until(lambda: text(browser, '#queues tr[data-queue="asr"] td[data-count="dead"]') == "0", timeout=15,
               what="the asr dead count to show 0")
    wait_until(lambda: text(browser, f'#jobs tr[data-job-id="{retried}"] .status') == "completed", timeout=240,
               what="the retried job's row, completed")
    assert attribute(browser, "#notice", "class") != "error", text(browser, "#notice")
    assert not_reloaded(browser)
    result = dash.get(f"/api/transcribe/result/{retried}")
    assert result.status_code == 200 and result.json()["segments"], result.text
    assert all(s["speaker"] for s in result.json()["segments"])  # run with speakers this time
    assert [d for d in state(dash)["dead_letters"] if d["queue"] == "asr"] == []
