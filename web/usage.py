"""Usage pages: weekly history, overall totals and the filtered list of model calls (contract §8.10), declared."""
from __future__ import annotations

from typing import Literal

from flask import Blueprint

from services import usage
from web.declared import Field, QueryModel, WireModel, endpoint, query_integer

usage_bp = Blueprint("usage", __name__, url_prefix="/api/usage")

WEEKS_DEFAULT, WEEKS_MIN, WEEKS_MAX = 12, 1, 52
LIMIT_DEFAULT, LIMIT_MAX = 50, 200
COST = "Estimated cost from the price list (0 for local models unless PARLEY_PRICING_JSON sets prices)"
MS = "Unix epoch milliseconds, a non-negative integer"


# --- shapes --------------------------------------------------------------------------------------------
class LlmTotals(WireModel):
    total_prompt_tokens: int = Field(ge=0)
    total_completion_tokens: int = Field(ge=0)
    estimated_cost: float = Field(ge=0, description=COST)
    call_count: int = Field(ge=0)


class WhisperTotals(WireModel):
    total_duration: int = Field(ge=0, description="Seconds of transcribed audio")
    estimated_cost: float = Field(ge=0, description=COST)
    call_count: int = Field(ge=0)


class UsageWeek(WireModel):
    week_start: int = Field(description="Monday 00:00 UTC (Unix epoch milliseconds)")
    week_end: int = Field(description="weekStart + 7 days - 1 ms")
    llm: LlmTotals
    whisper: WhisperTotals
    total_cost: float = Field(ge=0, description=COST)


class LlmPrice(WireModel):
    prompt_cost_per_1m: float = Field(ge=0, alias="promptCostPer1M")
    completion_cost_per_1m: float = Field(ge=0, alias="completionCostPer1M")


class WhisperPrice(WireModel):
    cost_per_minute: float = Field(ge=0)


class UsagePricing(WireModel):
    """The price list of the server, from PARLEY_PRICING_JSON; by default everything costs 0"""

    llm: dict[str, LlmPrice] = Field(description="Model name (or default, for models not listed) to prices in "
                                     "US dollars")
    whisper: dict[str, WhisperPrice] = Field(description="Model name (or default, for models not listed) to "
                                             "price in US dollars")


class UsageHistory(WireModel):
    weeks: list[UsageWeek] = Field(description="Exactly `weeks` entries, oldest first; the last is this week")
    pricing: UsagePricing


class LlmStats(LlmTotals):
    calls_by_model: dict[str, int] = Field(description="Calls per model")
    calls_by_source: dict[str, int] = Field(description="Calls per source, e.g. session_chat")


class WhisperStats(WhisperTotals):
    calls_by_model: dict[str, int] = Field(description="Calls per model")


class UsageStats(WireModel):
    """Totals over the whole usage log"""

    llm: LlmStats
    whisper: WhisperStats
    total_estimated_cost: float = Field(ge=0, description=COST)


class UsageLogItem(WireModel):
    id: int = Field(ge=1)
    type: Literal["llm", "whisper"]
    source: str = Field(description="What made the call: session_chat, standalone_chat, summary, "
                        "analysis_short_prompt, analysis_strategy, analysis_map, analysis_reduce, "
                        "whisper_transcription, ...")
    model: str
    prompt_tokens: int | None = Field(ge=0)
    completion_tokens: int | None = Field(ge=0)
    duration: int | None = Field(ge=0, description="Seconds of audio (whisper) or milliseconds of generation (llm)")
    timestamp: int = Field(description="When the call was made (Unix epoch milliseconds)")
    estimated_cost: float = Field(ge=0, description=COST)


class UsageLogPage(WireModel):
    items: list[UsageLogItem] = Field(description="Newest first")
    total: int = Field(ge=0, description="Rows matching the filters")
    limit: int = Field(ge=1, le=LIMIT_MAX)
    offset: int = Field(ge=0)


ANY_INTEGER = query_integer(minimum=None, maximum=None, signed=True)


class HistoryQuery(QueryModel):
    weeks: ANY_INTEGER = Field(WEEKS_DEFAULT, description="Number of weeks up to and including this one; any "
                               "integer is accepted and clamped to 1..52 (as the sessions client expects), so 0 "
                               "gives 1 week")


class LogsQuery(QueryModel):
    start: query_integer() | None = Field(None, description=f"Only calls at or after this time ({MS})")
    end: query_integer() | None = Field(None, description=f"Only calls at or before this time ({MS})")
    type: Literal["llm", "whisper"] | None = Field(None, description="Only calls of this type")
    model: str = Field("", description="Only calls of this model (empty: all)")
    source: str = Field("", description="Only calls from this source (empty: all)")
    limit: query_integer(minimum=1) = Field(LIMIT_DEFAULT, description=f"Page size; more than {LIMIT_MAX} "
                                            f"gives {LIMIT_MAX}")
    offset: query_integer() = Field(0, description="Rows to skip")


# --- endpoints -----------------------------------------------------------------------------------------
@usage_bp.get("/history")
@endpoint(tag="usage", query=HistoryQuery, responses={200: (UsageHistory, "One entry per week, oldest first"),
                                                      400: "weeks is not an integer"})
def usage_history(query: HistoryQuery):
    """Weekly usage and estimated cost"""
    return UsageHistory.model_validate(usage.history(min(WEEKS_MAX, max(WEEKS_MIN, query.weeks))))


@usage_bp.get("/stats")
@endpoint(tag="usage", responses={200: (UsageStats, "Totals over the whole usage log")})
def usage_stats():
    """Usage totals, with call counts by model and source"""
    return UsageStats.model_validate(usage.stats())


@usage_bp.get("/logs")
@endpoint(tag="usage", query=LogsQuery, responses={
    200: (UsageLogPage, "A page of the log, newest first"),
    400: "start, end or offset is not a non-negative integer; limit is not a positive integer; type is not llm "
         "or whisper"})
def usage_logs(query: LogsQuery):
    """The usage log, filtered and paged"""
    return UsageLogPage.model_validate(usage.logs(
        start=query.start, end=query.end, type_=query.type, model=query.model or None, source=query.source or None,
        limit=min(query.limit, LIMIT_MAX), offset=query.offset))
