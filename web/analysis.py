"""Multi-session analysis jobs: create, list, detail, live stream (SSE), cancel, delete."""
from __future__ import annotations

import json
import queue

from flask import Blueprint, Response, jsonify

from models import AnalysisJob, AnalysisSummary, Session
from models.statuses import TERMINAL
from parley.timestamps import now_ms
from services import analyses, job_control, llm_config
from web import forms, sse
from web.context import hub, settings
from web.errors import ApiError, bad_request, not_found
from web.sessions import json_body, numeric_id
from web.streams import RESYNC

analysis_bp = Blueprint("analysis", __name__, url_prefix="/api/analysis-jobs")

MAX_SESSIONS, PROMPT_CHARS = 50, (10, 5000)


def channel_id(job_id: int) -> str:
    return f"analysis-{job_id}"


# --- shapes ---------------------------------------------------------------------------------------
def job_dict(job: AnalysisJob) -> dict:
    return {
        "id": job.id, "original_prompt": job.original_prompt, "short_prompt": job.short_prompt, "status": job.status,
        "final_result": job.final_result, "error_message": job.error_message, "created_at": job.created_at_ms,
        "completed_at": job.completed_at_ms, "model_name": job.model_name, "context_size": job.context_size,
        "strategy_json": job.strategy_json, "thinking_budget": job.thinking_budget, "temperature": job.temperature,
        "top_p": job.top_p, "repeat_penalty": job.repeat_penalty, "num_gpu_layers": job.num_gpu_layers,
        "map_phase_system_prompt": job.map_phase_system_prompt, "llm_base_url": job.llm_base_url,
    }


def summary_row(s: AnalysisSummary) -> dict:
    return {"id": s.id, "analysis_job_id": s.analysis_job_id, "session_id": s.session_id,
            "summary_text": s.summary_text, "status": s.status, "error_message": s.error_message}


def detail(job: AnalysisJob) -> dict:
    rows = (AnalysisSummary.select(AnalysisSummary, Session).join(Session)
            .where(AnalysisSummary.analysis_job == job.id).order_by(Session.date, Session.id))
    summaries = [{**summary_row(s), "sessionName": s.session.session_name or s.session.file_name
                  or f"Session ID {s.session_id}", "sessionDate": s.session.date or ""} for s in rows]
    strategy = json.loads(job.strategy_json) if job.strategy_json else None
    return {**job_dict(job), "summaries": summaries, "strategy": strategy}


def job_or_404(job_id: str) -> AnalysisJob:
    jid = numeric_id(job_id, "jobId")
    job = AnalysisJob.get_or_none(AnalysisJob.id == jid) if jid >= 1 else None
    if jid < 1:
        raise bad_request("jobId must be at least 1")
    if job is None:
        raise not_found(f"Analysis job {jid} not found.")
    return job


# --- create ---------------------------------------------------------------------------------------
def _optional_range(body: dict, key: str, lo: float, hi: float) -> float | None:
    if body.get(key) is None:
        return None
    value = forms.as_float(key, body[key], lo=lo)  # "" reads as absent: None
    if value is not None and value > hi:
        raise bad_request(f"{key} must be between {lo} and {hi}, got {value}")
    return value


@analysis_bp.post("")
def create_job():
    body = json_body(dict, "object with sessionIds and prompt")
    ids = body.get("sessionIds")
    if (not isinstance(ids, list) or not 1 <= len(ids) <= MAX_SESSIONS
            or not all(isinstance(i, int) and not isinstance(i, bool) and 0 < i <= forms.INT64_MAX for i in ids)):
        raise bad_request(f"sessionIds must be a list of 1 to {MAX_SESSIONS} positive integers")
    ids = list(dict.fromkeys(ids))
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not PROMPT_CHARS[0] <= len(prompt.strip()) <= PROMPT_CHARS[1]:
        raise bad_request(f"prompt must be {PROMPT_CHARS[0]} to {PROMPT_CHARS[1]} characters")
    prompt = prompt.strip()
    map_prompt = body.get("mapPhaseSystemPrompt")
    if map_prompt is not None and (not isinstance(map_prompt, str) or len(map_prompt) > 2000):
        raise bad_request("mapPhaseSystemPrompt must be a string of at most 2000 characters")
    base = body.get("baseUrl")
    base_url = None if base is None or llm_config.is_local(base) else base
    if base_url is not None and (not isinstance(base_url, str) or not base_url.startswith(("http://", "https://"))
                                 or len(base_url) > 2048):
        raise bad_request("baseUrl must be an http(s) URL")
    params = {
        "temperature": _optional_range(body, "temperature", 0.0, 2.0),
        "top_p": _optional_range(body, "topP", 0.0, 1.0),
        "repeat_penalty": _optional_range(body, "repeatPenalty", 0.5, 2.0),
        "num_gpu_layers": forms.as_int("numGpuLayers", body.get("numGpuLayers"), lo=0),
        "thinking_budget": forms.as_int("thinkingBudget", body.get("thinkingBudget"), lo=-1),
    }
    job = analyses.start_analysis(settings(), analyses.AnalysisRequest(
        session_ids=ids, prompt=prompt, map_prompt=map_prompt, base_url=base_url, model=body.get("modelName"),
        context_size=forms.as_int("contextSize", body.get("contextSize"), lo=1),
        advanced=forms.as_bool("useAdvancedStrategy", body.get("useAdvancedStrategy"), default=False),
        params=params))
    return jsonify(jobId=job.id), 202


# --- read -----------------------------------------------------------------------------------------
@analysis_bp.get("")
def list_jobs():
    return jsonify([job_dict(j) for j in AnalysisJob.select().order_by(AnalysisJob.created_at_ms.desc())])


@analysis_bp.get("/<job_id>")
def get_job(job_id: str):
    return jsonify(detail(job_or_404(job_id)))


@analysis_bp.get("/<job_id>/stream")
def stream(job_id: str):
    try:
        job = job_or_404(job_id)
    except ApiError as exc:
        return Response("Job not found" if exc.status == 404 else exc.message, status=exc.status,
                        mimetype="text/plain")
    q = hub().register(channel_id(job.id))  # before the snapshot: nothing published after it is missed
    events = hub()

    def relay():
        try:
            current = AnalysisJob.get_by_id(job.id)
            summaries = [summary_row(s) for s in current.summaries.order_by(AnalysisSummary.id)]
            yield sse.event({"type": "snapshot", "phase": "status", "job": job_dict(current), "summaries": summaries})
            if current.status in TERMINAL:
                yield sse.event(_terminal(current))
                return
            while True:
                try:
                    item = q.get(timeout=2.0)
                except queue.Empty:
                    yield sse.comment("keep-alive")
                    latest = AnalysisJob.get_by_id(job.id)
                    if latest.status in TERMINAL:  # ended while a message was lost: end cleanly anyway
                        yield sse.event(_terminal(latest))
                        return
                    continue
                if item is RESYNC:
                    continue
                payload = {k: v for k, v in item.items() if k not in ("job_id", "seq")}
                yield sse.event(payload)
                if payload.get("type") == "status" and payload.get("phase") == "status":
                    return
        finally:
            events.unregister(channel_id(job.id), q)

    return sse.response(relay())


def _terminal(job: AnalysisJob) -> dict:
    return {"type": "status", "phase": "status", "status": job.status, "jobId": job.id, "timestamp": now_ms()}


# --- cancel and delete ----------------------------------------------------------------------------
@analysis_bp.post("/<job_id>/cancel")
def cancel(job_id: str):
    job = job_control.cancel_analysis(job_or_404(job_id))
    return jsonify(message=f"Cancellation request for job {job.id} accepted."), 202


@analysis_bp.delete("/<job_id>")
def delete(job_id: str):
    job = job_or_404(job_id)
    job_control.delete_analysis(job)
    return jsonify(message=f"Analysis job {job.id} and all associated data deleted.")
