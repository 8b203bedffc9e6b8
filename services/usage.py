"""The usage log: one row per model call (LLM tokens, seconds of transcribed audio), and what the usage
pages ask of it: weekly history, overall totals, and a filtered, paged list (contract §8.10).

Costs are estimates from a price list. Parley's models run locally, so by default everything costs 0;
`PARLEY_PRICING_JSON` sets prices for deployments that want a figure (for example to compare with a hosted
service), in the shape of the API's `pricing` object:

    {"llm": {"<model>": {"promptCostPer1M": 0.15, "completionCostPer1M": 0.6}},
     "whisper": {"<model>": {"costPerMinute": 0.006}}}

A model that is not listed costs what the entry named "default" says (0 unless set).
"""
from __future__ import annotations

import json
import logging
import math
from functools import lru_cache

import peewee
from peewee import SQL, fn

from models import UsageLog
from parley.config import get_settings
from parley.errors import InvalidInput
from parley.timestamps import now_ms

log = logging.getLogger(__name__)

DAY_MS = 24 * 3600 * 1000
WEEK_MS = 7 * DAY_MS
TYPES = ("llm", "whisper")
DEFAULT_KEY = "default"
LLM_PRICE_KEYS = ("promptCostPer1M", "completionCostPer1M")
WHISPER_PRICE_KEYS = ("costPerMinute",)
COST_DIGITS = 10  # rounding of the estimates, so sums do not show float noise such as 0.30000000000000004


# --- recording ------------------------------------------------------------------------------------
def record_llm(*, source: str, model: str, prompt_tokens: int | None, completion_tokens: int | None,
               duration_ms: float | None, timestamp_ms: int | None = None) -> UsageLog | None:
    """Log one language-model call; `duration_ms` is the generation time.

    Best effort: a database error is logged and swallowed (None is returned), so failing to count a reply
    never fails the reply.
    """
    return _record(type="llm", source=source, model=model, prompt_tokens=_int(prompt_tokens),
                   completion_tokens=_int(completion_tokens), duration=_int(duration_ms),
                   timestamp_ms=timestamp_ms)


def record_whisper(*, model: str, audio_seconds: float | None, source: str = "whisper_transcription",
                   timestamp_ms: int | None = None) -> UsageLog | None:
    """Log one transcription: `audio_seconds` of audio (stored as whole seconds). Best effort, as record_llm."""
    return _record(type="whisper", source=source, model=model, prompt_tokens=None, completion_tokens=None,
                   duration=_int(audio_seconds), timestamp_ms=timestamp_ms)


def _int(value) -> int | None:
    if value is None:
        return None
    value = float(value)
    return int(round(value)) if math.isfinite(value) else None


def _record(*, type: str, source: str, model: str, prompt_tokens, completion_tokens, duration,
            timestamp_ms: int | None) -> UsageLog | None:
    try:
        return UsageLog.create(type=type, source=source or "unknown", model=model or "unknown",
                               prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, duration=duration,
                               timestamp_ms=now_ms() if timestamp_ms is None else int(timestamp_ms))
    except peewee.DatabaseError:
        log.warning("could not record %s usage of %s (%s)", type, model, source, exc_info=True)
        return None


# --- pricing --------------------------------------------------------------------------------------
class PricingError(InvalidInput):
    """PARLEY_PRICING_JSON is not valid."""


def parse_pricing(raw: str | None) -> dict:
    """The price list from the JSON text of PARLEY_PRICING_JSON (None or blank: everything costs 0)."""
    prices = {"llm": {DEFAULT_KEY: {k: 0.0 for k in LLM_PRICE_KEYS}},
              "whisper": {DEFAULT_KEY: {k: 0.0 for k in WHISPER_PRICE_KEYS}}}
    if raw is None or not raw.strip():
        return prices
    try:
        given = json.loads(raw)
    except ValueError as exc:
        raise PricingError(f"PARLEY_PRICING_JSON is not valid JSON: {exc}") from None
    if not isinstance(given, dict) or set(given) - set(TYPES):
        raise PricingError('PARLEY_PRICING_JSON must be an object with the keys "llm" and/or "whisper"')
    for kind, keys in (("llm", LLM_PRICE_KEYS), ("whisper", WHISPER_PRICE_KEYS)):
        models = given.get(kind, {})
        if not isinstance(models, dict):
            raise PricingError(f"PARLEY_PRICING_JSON: {kind!r} must be an object of model name to prices")
        for model, entry in models.items():
            if not isinstance(entry, dict) or set(entry) != set(keys):
                raise PricingError(f"PARLEY_PRICING_JSON: {kind}.{model} must be an object with exactly "
                                   f"{', '.join(keys)}")
            for key in keys:
                value = entry[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                        or value < 0:
                    raise PricingError(f"PARLEY_PRICING_JSON: {kind}.{model}.{key} must be a number >= 0")
            prices[kind][model] = {key: float(entry[key]) for key in keys}
    return prices


@lru_cache(maxsize=1)
def pricing() -> dict:
    """The price list of this process (read once from the environment)."""
    return parse_pricing(get_settings().pricing_json or None)


def llm_cost(prices: dict, model: str, prompt_tokens: int | None, completion_tokens: int | None) -> float:
    price = prices["llm"].get(model) or prices["llm"][DEFAULT_KEY]
    return ((prompt_tokens or 0) * price["promptCostPer1M"]
            + (completion_tokens or 0) * price["completionCostPer1M"]) / 1_000_000


def whisper_cost(prices: dict, model: str, seconds: int | None) -> float:
    price = prices["whisper"].get(model) or prices["whisper"][DEFAULT_KEY]
    return (seconds or 0) / 60 * price["costPerMinute"]


def row_cost(prices: dict, type_: str, model: str, prompt_tokens, completion_tokens, duration) -> float:
    if type_ == "llm":
        return llm_cost(prices, model, prompt_tokens, completion_tokens)
    return whisper_cost(prices, model, duration)


def _money(value: float) -> float:
    return round(float(value), COST_DIGITS) + 0.0  # + 0.0 turns -0.0 into 0.0


# --- weeks ----------------------------------------------------------------------------------------
def week_start(ts_ms: int) -> int:
    """Monday 00:00 UTC of the week holding `ts_ms` (epoch ms)."""
    days = ts_ms // DAY_MS
    return (days - (days + 3) % 7) * DAY_MS  # 1970-01-01 was a Thursday (weekday 3, Monday = 0)


def _sums():
    return (fn.SUM(fn.COALESCE(UsageLog.prompt_tokens, 0)).alias("prompt"),
            fn.SUM(fn.COALESCE(UsageLog.completion_tokens, 0)).alias("completion"),
            fn.SUM(fn.COALESCE(UsageLog.duration, 0)).alias("duration"),
            fn.COUNT(UsageLog.id).alias("calls"))


def _empty_week(start: int) -> dict:
    return {"weekStart": start, "weekEnd": start + WEEK_MS - 1,
            "llm": {"totalPromptTokens": 0, "totalCompletionTokens": 0, "estimatedCost": 0.0, "callCount": 0},
            "whisper": {"totalDuration": 0, "estimatedCost": 0.0, "callCount": 0},
            "totalCost": 0.0}


def history(weeks: int, *, now: int | None = None, prices: dict | None = None) -> dict:
    """Exactly `weeks` weekly buckets (Monday 00:00 UTC), oldest first, the last holding `now`."""
    prices = prices or pricing()
    last = week_start(now_ms() if now is None else now)
    first = last - (weeks - 1) * WEEK_MS
    buckets = [_empty_week(first + i * WEEK_MS) for i in range(weeks)]
    index = ((UsageLog.timestamp_ms - first) / WEEK_MS).alias("bucket")  # integer division: both are integers
    rows = (UsageLog.select(index, UsageLog.type, UsageLog.model, *_sums())
            .where((UsageLog.timestamp_ms >= first) & (UsageLog.timestamp_ms < last + WEEK_MS))
            .group_by(SQL("bucket"), UsageLog.type, UsageLog.model)
            .tuples())
    for bucket, type_, model, prompt, completion, duration, calls in rows:
        week = buckets[int(bucket)]
        if type_ == "llm":
            week["llm"]["totalPromptTokens"] += int(prompt)
            week["llm"]["totalCompletionTokens"] += int(completion)
            week["llm"]["callCount"] += int(calls)
            week["llm"]["estimatedCost"] += llm_cost(prices, model, int(prompt), int(completion))
        elif type_ == "whisper":
            week["whisper"]["totalDuration"] += int(duration)
            week["whisper"]["callCount"] += int(calls)
            week["whisper"]["estimatedCost"] += whisper_cost(prices, model, int(duration))
    for week in buckets:
        week["totalCost"] = _money(week["llm"]["estimatedCost"] + week["whisper"]["estimatedCost"])
        week["llm"]["estimatedCost"] = _money(week["llm"]["estimatedCost"])
        week["whisper"]["estimatedCost"] = _money(week["whisper"]["estimatedCost"])
    return {"weeks": buckets, "pricing": prices}


def stats(*, prices: dict | None = None) -> dict:
    """Totals over the whole log, with call counts by model (and, for the LLM, by source)."""
    prices = prices or pricing()
    out = {
        "llm": {"totalPromptTokens": 0, "totalCompletionTokens": 0, "estimatedCost": 0.0, "callCount": 0,
                "callsByModel": {}, "callsBySource": {}},
        "whisper": {"totalDuration": 0, "estimatedCost": 0.0, "callCount": 0, "callsByModel": {}},
    }
    rows = (UsageLog.select(UsageLog.type, UsageLog.model, UsageLog.source, *_sums())
            .group_by(UsageLog.type, UsageLog.model, UsageLog.source)
            .tuples())
    for type_, model, source, prompt, completion, duration, calls in rows:
        prompt, completion, duration, calls = int(prompt), int(completion), int(duration), int(calls)
        if type_ == "llm":
            part = out["llm"]
            part["totalPromptTokens"] += prompt
            part["totalCompletionTokens"] += completion
            part["estimatedCost"] += llm_cost(prices, model, prompt, completion)
            part["callsBySource"][source] = part["callsBySource"].get(source, 0) + calls
        elif type_ == "whisper":
            part = out["whisper"]
            part["totalDuration"] += duration
            part["estimatedCost"] += whisper_cost(prices, model, duration)
        else:
            continue
        part["callCount"] += calls
        part["callsByModel"][model] = part["callsByModel"].get(model, 0) + calls
    total = out["llm"]["estimatedCost"] + out["whisper"]["estimatedCost"]
    out["llm"]["estimatedCost"] = _money(out["llm"]["estimatedCost"])
    out["whisper"]["estimatedCost"] = _money(out["whisper"]["estimatedCost"])
    out["totalEstimatedCost"] = _money(total)
    return out


def log_item(row: UsageLog, prices: dict) -> dict:
    return {"id": row.id, "type": row.type, "source": row.source, "model": row.model,
            "promptTokens": row.prompt_tokens, "completionTokens": row.completion_tokens,
            "duration": row.duration, "timestamp": row.timestamp_ms,
            "estimatedCost": _money(row_cost(prices, row.type, row.model, row.prompt_tokens, row.completion_tokens,
                                             row.duration))}


def logs(*, start: int | None = None, end: int | None = None, type_: str | None = None, model: str | None = None,
         source: str | None = None, limit: int = 50, offset: int = 0, prices: dict | None = None) -> dict:
    """Rows with start <= timestamp <= end (ms, both optional) and the given type, model and source,
    newest first; `total` counts every matching row."""
    prices = prices or pricing()
    query = UsageLog.select()
    if start is not None:
        query = query.where(UsageLog.timestamp_ms >= start)
    if end is not None:
        query = query.where(UsageLog.timestamp_ms <= end)
    if type_ is not None:
        query = query.where(UsageLog.type == type_)
    if model is not None:
        query = query.where(UsageLog.model == model)
    if source is not None:
        query = query.where(UsageLog.source == source)
    total = query.count()
    rows = query.order_by(UsageLog.timestamp_ms.desc(), UsageLog.id.desc()).limit(limit).offset(offset)
    return {"items": [log_item(r, prices) for r in rows], "total": total, "limit": limit, "offset": offset}
