"""Usage and pricing through the real web tier (contract §8.10): history, stats, logs and their parameters.

Usage rows are written with services.usage.record_* straight into the stack's database, at known times, then
read back through HTTP. The rows sit 30 weeks in the past under model and source names of their own, so rows
other tests make now do not disturb the checks.
"""
from __future__ import annotations

import datetime
import json
import time

import pytest

from conftest import running_stack
from helpers import assert_error, unique

WEEK = 7 * 24 * 3600 * 1000
HOUR = 3600 * 1000
LOG_KEYS = {"id", "type", "source", "model", "promptTokens", "completionTokens", "duration", "timestamp",
            "estimatedCost"}


def bind(database_url: str) -> None:
    """Point this process's models at a stack's database (the stack is SQLite: one file, shared safely)."""
    from models import init_db

    init_db(database_url)


# --- usage ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def usage_rows(stack):
    """Rows in three consecutive weeks, 31..29 weeks ago, with the stats just before they were written."""
    from models import UsageLog
    from services import usage

    bind(stack.env["DATABASE_URL"])
    stats_before = stack.get("/api/usage/stats").json()
    last_id_before = UsageLog.select(UsageLog.id).order_by(UsageLog.id.desc()).scalar() or 0

    base = usage.week_start(int(time.time() * 1000)) - 30 * WEEK  # Monday 00:00 UTC, 30 weeks ago
    m1, m2, w1 = unique("llm-one"), unique("llm-two"), unique("whisper-one")
    s1, s2 = unique("session_chat"), unique("analysis_map")
    rows = [
        # the week before: its very last millisecond
        usage.record_llm(source=s1, model=m2, prompt_tokens=7, completion_tokens=3, duration_ms=40,
                         timestamp_ms=base - 1),
        # week A: its first millisecond, the middle, its last millisecond
        usage.record_llm(source=s1, model=m1, prompt_tokens=100, completion_tokens=20, duration_ms=1500.4,
                         timestamp_ms=base),
        usage.record_llm(source=s2, model=m2, prompt_tokens=50, completion_tokens=5, duration_ms=800,
                         timestamp_ms=base + 3 * 24 * HOUR),
        usage.record_whisper(model=w1, audio_seconds=90.4, timestamp_ms=base + WEEK - 1),
        # week B
        usage.record_llm(source=s2, model=m1, prompt_tokens=10, completion_tokens=1, duration_ms=100,
                         timestamp_ms=base + WEEK),
        usage.record_whisper(model=w1, audio_seconds=30, timestamp_ms=base + WEEK + HOUR),
        usage.record_llm(source=s1, model=m1, prompt_tokens=None, completion_tokens=None, duration_ms=None,
                         timestamp_ms=base + WEEK + 2 * HOUR),
    ]
    assert all(row is not None for row in rows)
    new_rows = list(UsageLog.select().where(UsageLog.id > last_id_before))  # ours, and any a worker wrote meanwhile
    return {"base": base, "m1": m1, "m2": m2, "w1": w1, "s1": s1, "s2": s2, "rows": rows,
            "stats_before": stats_before, "new_rows": new_rows}


def test_record_functions_write_usage_rows(stack, usage_rows):
    from models import UsageLog
    from services import usage

    bind(stack.env["DATABASE_URL"])
    llm = UsageLog.get_by_id(usage_rows["rows"][1].id)
    assert (llm.type, llm.source, llm.model, llm.prompt_tokens, llm.completion_tokens, llm.duration,
            llm.timestamp_ms) == ("llm", usage_rows["s1"], usage_rows["m1"], 100, 20, 1500, usage_rows["base"])
    whisper = UsageLog.get_by_id(usage_rows["rows"][3].id)
    assert (whisper.type, whisper.source, whisper.model, whisper.prompt_tokens, whisper.duration) == (
        "whisper", "whisper_transcription", usage_rows["w1"], None, 90)

    before = int(time.time() * 1000)
    row = usage.record_whisper(model=unique("now"), audio_seconds=1.6)
    assert row.duration == 2 and before <= row.timestamp_ms <= int(time.time() * 1000)
    UsageLog.delete_by_id(row.id)


def test_usage_history_buckets_by_monday_utc(stack, usage_rows):
    base = usage_rows["base"]
    answer = stack.get("/api/usage/history", params={"weeks": "52"})
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"weeks", "pricing"}
    weeks = body["weeks"]
    assert len(weeks) == 52
    now = int(time.time() * 1000)
    assert weeks[-1]["weekStart"] <= now <= weeks[-1]["weekEnd"]
    for week, following in zip(weeks, weeks[1:]):
        assert following["weekStart"] == week["weekStart"] + WEEK
    for week in weeks:
        assert set(week) == {"weekStart", "weekEnd", "llm", "whisper", "totalCost"}
        assert week["weekEnd"] == week["weekStart"] + WEEK - 1
        start = datetime.datetime.fromtimestamp(week["weekStart"] / 1000, tz=datetime.timezone.utc)
        assert (start.weekday(), start.hour, start.minute, start.second, start.microsecond) == (0, 0, 0, 0, 0)

    by_start = {w["weekStart"]: w for w in weeks}
    assert by_start[base - WEEK] == {
        "weekStart": base - WEEK, "weekEnd": base - 1,
        "llm": {"totalPromptTokens": 7, "totalCompletionTokens": 3, "estimatedCost": 0.0, "callCount": 1},
        "whisper": {"totalDuration": 0, "estimatedCost": 0.0, "callCount": 0}, "totalCost": 0.0}
    assert by_start[base] == {
        "weekStart": base, "weekEnd": base + WEEK - 1,
        "llm": {"totalPromptTokens": 150, "totalCompletionTokens": 25, "estimatedCost": 0.0, "callCount": 2},
        "whisper": {"totalDuration": 90, "estimatedCost": 0.0, "callCount": 1}, "totalCost": 0.0}
    assert by_start[base + WEEK] == {
        "weekStart": base + WEEK, "weekEnd": base + 2 * WEEK - 1,
        "llm": {"totalPromptTokens": 10, "totalCompletionTokens": 1, "estimatedCost": 0.0, "callCount": 2},
        "whisper": {"totalDuration": 30, "estimatedCost": 0.0, "callCount": 1}, "totalCost": 0.0}
    assert by_start[base + 2 * WEEK]["llm"]["callCount"] == 0
    # Local models cost nothing unless PARLEY_PRICING_JSON says otherwise.
    assert all(price == {"promptCostPer1M": 0.0, "completionCostPer1M": 0.0}
               for price in body["pricing"]["llm"].values())
    assert all(price == {"costPerMinute": 0.0} for price in body["pricing"]["whisper"].values())

    # weeks=31 starts exactly at week A: the window is `weeks` whole weeks up to this one.
    weeks31 = stack.get("/api/usage/history", params={"weeks": "31"}).json()["weeks"]
    assert len(weeks31) == 31 and weeks31[0]["weekStart"] == base and weeks31[0]["llm"]["callCount"] == 2
    assert [w["weekStart"] for w in weeks31] == [w["weekStart"] for w in weeks[-31:]]


@pytest.mark.parametrize("weeks,expected", [(None, 12), ("1", 1), ("0", 1), ("-4", 1), ("52", 52), ("53", 52),
                                            ("1000", 52), (" 7 ", 7)])
def test_usage_history_weeks_are_clamped(stack, weeks, expected):
    params = {} if weeks is None else {"weeks": weeks}
    answer = stack.get("/api/usage/history", params=params)
    assert answer.status_code == 200
    assert len(answer.json()["weeks"]) == expected


@pytest.mark.parametrize("weeks", ["abc", "1.5", "", "12w"])
def test_usage_history_rejects_non_numeric_weeks(stack, weeks):
    assert_error(stack.get("/api/usage/history", params={"weeks": weeks}), 400)


def test_usage_stats_totals_and_breakdowns(stack, usage_rows):
    before, after = usage_rows["stats_before"], stack.get("/api/usage/stats").json()
    assert set(after) == {"llm", "whisper", "totalEstimatedCost"}
    assert set(after["llm"]) == {"totalPromptTokens", "totalCompletionTokens", "estimatedCost", "callCount",
                                 "callsByModel", "callsBySource"}
    assert set(after["whisper"]) == {"totalDuration", "estimatedCost", "callCount", "callsByModel"}
    new_llm = [r for r in usage_rows["new_rows"] if r.type == "llm"]
    new_whisper = [r for r in usage_rows["new_rows"] if r.type == "whisper"]
    assert after["llm"]["totalPromptTokens"] - before["llm"]["totalPromptTokens"] == sum(
        r.prompt_tokens or 0 for r in new_llm)
    assert after["llm"]["totalCompletionTokens"] - before["llm"]["totalCompletionTokens"] == sum(
        r.completion_tokens or 0 for r in new_llm)
    assert after["llm"]["callCount"] - before["llm"]["callCount"] == len(new_llm)
    assert after["whisper"]["totalDuration"] - before["whisper"]["totalDuration"] == sum(
        r.duration or 0 for r in new_whisper)
    assert after["whisper"]["callCount"] - before["whisper"]["callCount"] == len(new_whisper)

    u = usage_rows
    assert after["llm"]["callsByModel"][u["m1"]] == 3 and after["llm"]["callsByModel"][u["m2"]] == 2
    assert after["llm"]["callsBySource"][u["s1"]] == 3 and after["llm"]["callsBySource"][u["s2"]] == 2
    assert after["whisper"]["callsByModel"][u["w1"]] == 2
    assert u["w1"] not in after["llm"]["callsByModel"] and u["m1"] not in after["whisper"]["callsByModel"]
    assert "whisper_transcription" not in after["llm"]["callsBySource"]
    assert sum(after["llm"]["callsByModel"].values()) == after["llm"]["callCount"]
    assert sum(after["llm"]["callsBySource"].values()) == after["llm"]["callCount"]
    assert sum(after["whisper"]["callsByModel"].values()) == after["whisper"]["callCount"]
    assert after["llm"]["estimatedCost"] == after["whisper"]["estimatedCost"] == after["totalEstimatedCost"] == 0.0


def test_usage_logs_filters(stack, usage_rows):
    u, base = usage_rows, usage_rows["base"]

    def logs(**params):
        answer = stack.get("/api/usage/logs", params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    page = logs(model=u["m1"])
    assert set(page) == {"items", "total", "limit", "offset"}
    assert (page["total"], page["limit"], page["offset"]) == (3, 50, 0)
    assert [i["timestamp"] for i in page["items"]] == [base + WEEK + 2 * HOUR, base + WEEK, base]
    first = page["items"][-1]
    assert set(first) == LOG_KEYS
    assert first == {"id": u["rows"][1].id, "type": "llm", "source": u["s1"], "model": u["m1"], "promptTokens": 100,
                     "completionTokens": 20, "duration": 1500, "timestamp": base, "estimatedCost": 0.0}
    assert page["items"][0]["promptTokens"] is None and page["items"][0]["completionTokens"] is None
    assert page["items"][0]["duration"] is None

    whisper = logs(type="whisper", model=u["w1"])
    assert whisper["total"] == 2
    assert [(i["type"], i["source"], i["duration"], i["promptTokens"]) for i in whisper["items"]] == [
        ("whisper", "whisper_transcription", 30, None), ("whisper", "whisper_transcription", 90, None)]
    assert logs(type="llm", model=u["w1"])["total"] == 0
    assert logs(source=u["s2"])["total"] == 2
    assert {i["model"] for i in logs(source=u["s2"])["items"]} == {u["m1"], u["m2"]}
    assert logs(source=u["s1"], model=u["m2"])["total"] == 1
    assert logs(source=u["s1"], model=u["m1"], type="llm")["total"] == 2
    assert logs(model="", source=u["s2"])["total"] == 2  # an empty filter is no filter

    # start and end are inclusive.
    week_a = logs(start=base, end=base + WEEK - 1)
    assert [i["timestamp"] for i in week_a["items"]] == [base + WEEK - 1, base + 3 * 24 * HOUR, base]
    assert logs(start=base - 1, end=base)["total"] == 2
    assert logs(start=base + WEEK - 1, end=base + WEEK)["total"] == 2
    assert logs(start=base + 1, end=base + WEEK - 2)["total"] == 1
    assert logs(end=base - 1, model=u["m2"])["total"] == 1
    assert logs(start=base + WEEK, model=u["w1"])["total"] == 1


def test_usage_logs_pagination(stack, usage_rows):
    u = usage_rows
    everything = stack.get("/api/usage/logs", params={"source": u["s1"]}).json()
    assert everything["total"] == 3 and len(everything["items"]) == 3
    paged = []
    for offset in range(4):
        page = stack.get("/api/usage/logs", params={"source": u["s1"], "limit": 1, "offset": offset}).json()
        assert (page["total"], page["limit"], page["offset"]) == (3, 1, offset)
        paged.extend(page["items"])
    assert paged == everything["items"]  # the fourth page is empty
    page = stack.get("/api/usage/logs", params={"source": u["s1"], "limit": 3, "offset": 1}).json()
    assert page["items"] == everything["items"][1:]
    assert stack.get("/api/usage/logs", params={"limit": 500}).json()["limit"] == 200
    assert stack.get("/api/usage/logs", params={"limit": 200}).json()["limit"] == 200
    overall = stack.get("/api/usage/logs").json()
    assert (overall["limit"], overall["offset"]) == (50, 0) and len(overall["items"]) <= 50
    timestamps = [i["timestamp"] for i in overall["items"]]
    assert timestamps == sorted(timestamps, reverse=True)


@pytest.mark.parametrize("params", [
    {"start": "-1"}, {"start": "abc"}, {"start": "1.5"}, {"start": ""}, {"end": "-5"}, {"end": "soon"},
    {"type": "gpu"}, {"type": ""}, {"type": "LLM"}, {"limit": "0"}, {"limit": "-3"}, {"limit": "ten"},
    {"offset": "-1"}, {"offset": "x"},
], ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()))
def test_usage_logs_bad_parameters_are_400(stack, params):
    answer = stack.get("/api/usage/logs", params=params)
    assert_error(answer, 400)
    assert answer.json()["message"].startswith(f"invalid request: {next(iter(params))}: "), answer.json()


def test_usage_integers_are_plain_digits(stack):
    """Forms a lenient integer parser would take are refused, as they always were; spaces around are fine."""
    for value in ("1_000", "1.0", "+5", "9" * 19):
        answer = stack.get("/api/usage/logs", params={"offset": value})
        assert answer.status_code == 400 and f"got {value!r}" in answer.json()["message"], answer.text
    assert stack.get("/api/usage/logs", params={"offset": " 0 ", "limit": " 2 "}).json()["limit"] == 2


# --- pricing --------------------------------------------------------------------------------------
PRICES = {
    "llm": {"priced-llm": {"promptCostPer1M": 2.0, "completionCostPer1M": 8.0},
            "default": {"promptCostPer1M": 1.0, "completionCostPer1M": 1.0}},
    "whisper": {"priced-whisper": {"costPerMinute": 0.006}},
}


def test_configured_prices_give_costs(tmp_path, redis_server):
    from services import usage

    with running_stack(tmp_path, redis_server, PARLEY_PRICING_JSON=json.dumps(PRICES)) as priced:
        bind(priced.env["DATABASE_URL"])
        now = int(time.time() * 1000)
        usage.record_llm(source="session_chat", model="priced-llm", prompt_tokens=250_000,
                         completion_tokens=125_000, duration_ms=10, timestamp_ms=now)  # 0.5 + 1.0
        usage.record_llm(source="standalone_chat", model="other-llm", prompt_tokens=1_000_000, completion_tokens=0,
                         duration_ms=10, timestamp_ms=now)  # the default price: 1.0
        usage.record_whisper(model="priced-whisper", audio_seconds=600, timestamp_ms=now)  # 10 minutes: 0.06
        usage.record_whisper(model="other-whisper", audio_seconds=600, timestamp_ms=now)  # default: free

        stats = priced.get("/api/usage/stats").json()
        assert stats["llm"]["estimatedCost"] == pytest.approx(2.5)
        assert stats["whisper"]["estimatedCost"] == pytest.approx(0.06)
        assert stats["totalEstimatedCost"] == pytest.approx(2.56)

        history = priced.get("/api/usage/history", params={"weeks": 2}).json()
        assert history["pricing"] == {
            "llm": PRICES["llm"],
            "whisper": {**PRICES["whisper"], "default": {"costPerMinute": 0.0}},
        }
        this_week = history["weeks"][-1]
        assert this_week["llm"]["estimatedCost"] == pytest.approx(2.5)
        assert this_week["whisper"]["estimatedCost"] == pytest.approx(0.06)
        assert this_week["totalCost"] == pytest.approx(2.56)
        assert history["weeks"][0]["totalCost"] == 0.0

        costs = {i["model"]: i["estimatedCost"] for i in priced.get("/api/usage/logs").json()["items"]}
        assert costs == pytest.approx({"priced-llm": 1.5, "other-llm": 1.0, "priced-whisper": 0.06,
                                       "other-whisper": 0.0})


@pytest.mark.parametrize("raw", [
    "not json", "[]", '{"gpu": {}}', '{"llm": []}', '{"llm": {"m": {"promptCostPer1M": 1}}}',
    '{"llm": {"m": {"promptCostPer1M": -1, "completionCostPer1M": 1}}}',
    '{"whisper": {"m": {"costPerMinute": "free"}}}', '{"whisper": {"m": {"costPerMinute": true}}}',
])
def test_bad_price_lists_are_refused(raw):
    from services.usage import PricingError, parse_pricing

    with pytest.raises(PricingError):
        parse_pricing(raw)


def test_default_price_list_is_free():
    from services.usage import llm_cost, parse_pricing, whisper_cost

    for raw in (None, "", "  "):
        prices = parse_pricing(raw)
        assert llm_cost(prices, "gemma-3-270m", 10**9, 10**9) == 0.0
        assert whisper_cost(prices, "tiny.en", 10**6) == 0.0
