"""LLM management: models in the store or on a remote server, the active model and its settings, status."""
from __future__ import annotations

import re

from flask import Blueprint, current_app, jsonify, request

from jobs.heartbeats import alive_workers
from models import LlmJob
from services import llm_choice, llm_config, llmstore, remote_llm
from services.llm_jobs import queue_llm_job
from web import forms
from web.context import settings
from web.errors import ApiError, bad_request, not_found
from web.sessions import json_body

llm_bp = Blueprint("llm", __name__, url_prefix="/api/llm")


def _url(value, name: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(llm_config.REMOTE_URL_PATTERN, value, flags=re.DOTALL):
        raise bad_request(f"{name} must be an http(s) URL with a host, got {value!r}")
    return value.rstrip("/")


def _remote_models(base_url: str, token: str | None) -> list[dict]:
    """The model list of an OpenAI-compatible server, as LlmModelInfo objects."""
    try:
        data = remote_llm.list_models(base_url, token)
    except remote_llm.RemoteUnavailable as exc:
        raise ApiError(502, str(exc)) from None
    return [{"name": m["id"], "modified_at": "", "size": 0, "digest": m["id"],
             "details": {"format": "remote", "family": m["owned_by"], "families": None,
                         "parameter_size": "", "quantization_level": ""},
             "defaultContextSize": m["context_length"]} for m in data]


@llm_bp.get("/available-models")
def available_models():
    row = llm_config.current()
    base = request.args.get("baseUrl")
    if base and not llm_config.is_local(base):
        return jsonify(models=_remote_models(_url(base, "baseUrl"), row.api_token))
    return jsonify(models=[llm_config.model_info_dict(i) for i in llmstore.list_models(settings())])


@llm_bp.post("/set-model")
def set_model():
    body = json_body(dict, "object with modelName")
    name = body.get("modelName")
    if not isinstance(name, str) or not name.strip():
        raise bad_request("modelName must be a non-empty string")
    name = name.strip()
    changes: dict = {}
    if "baseUrl" in body:
        base = body["baseUrl"]
        changes["base_url"] = None if base is None or llm_config.is_local(base) else _url(base, "baseUrl")
    context = body.get("contextSize")
    changes["context_size"] = forms.as_int("contextSize", context, lo=1, hi=1_048_576) if context is not None else None
    for key, column, lo, hi in (("temperature", "temperature", 0.0, 2.0), ("topP", "top_p", 0.0, 1.0),
                                ("repeatPenalty", "repeat_penalty", 0.5, 2.0)):
        if body.get(key) is not None:
            value = forms.as_float(key, body[key], lo=lo)
            if value > hi:
                raise bad_request(f"{key} must be between {lo} and {hi}, got {value}")
            changes[column] = value
    if "numGpuLayers" in body:
        changes["num_gpu_layers"] = forms.as_int("numGpuLayers", body["numGpuLayers"], lo=0, hi=100_000)
    if "thinkingBudget" in body:
        changes["thinking_budget"] = forms.as_int("thinkingBudget", body["thinkingBudget"], lo=-1)
    llm_choice.choose_model(settings(), name, **changes)
    size = changes["context_size"] or "default"
    return jsonify(message=f"Active model set to {name} (context: {size}). Load initiated. Check status.")


@llm_bp.post("/unload")
def unload():
    resident = [w for w in _llm_workers() if w.get("llm_resident")]
    if not resident:
        return jsonify(message="No models were loaded.")
    queue_llm_job("unload_model")
    return jsonify(message=f"{len(resident)} model instance(s) unloaded successfully.")


@llm_bp.post("/api-token")
def api_token():
    body = json_body(dict, "object with token")
    token = body.get("token")
    if token is not None and not isinstance(token, str):
        raise bad_request("token must be a string or null")
    token = (token or "").strip() or None
    llm_choice.set_api_token(token)
    return jsonify(message="Remote LLM API token saved." if token else "Remote LLM API token cleared.",
                   hasRemoteApiToken=token is not None)


def _llm_workers() -> list[dict]:
    try:
        return [w for w in alive_workers(current_app.extensions["parley_redis"]) if "llm" in w.get("queues", [])]
    except Exception:  # noqa: BLE001  (status must answer even with Redis away)
        return []


@llm_bp.get("/status")
def status():
    row = llm_config.current()
    checked = request.args.get("modelName") or row.active_model
    local = llm_config.is_local(row.base_url)
    details = info = None
    if local and checked:
        info = llmstore.find(settings(), checked)
        details = llm_config.model_info_dict(info) if info else None
    workers = _llm_workers()
    resident = sorted({w["llm_resident"] for w in workers if w.get("llm_resident")})
    if details and checked in resident:
        # GPU memory only where a worker holding the model really offloaded it: a CPU-only host reports 0,
        # not the estimate of what a GPU would hold (the client would show "100% offloaded to GPU").
        on_gpu = any(w.get("llm_on_gpu") for w in workers if w.get("llm_resident") == checked)
        details["size_vram"] = llmstore.estimate_memory(
            info, context_size=row.context_size, num_gpu_layers=row.num_gpu_layers)["estimated_vram_bytes"] if on_gpu else 0
    last_load = (LlmJob.select().where(LlmJob.kind == "load_model").order_by(LlmJob.created_at_ms.desc()).first())
    # The store is listed once per lookup: reuse the checked model's when it is the active one.
    active_info = info if checked == row.active_model else (
        llmstore.find(settings(), row.active_model) if local and row.active_model else None)
    return jsonify(
        status="available" if workers or not local else "unavailable",
        activeModel=row.active_model,
        modelChecked=checked,
        # As the sessions client expects: "loaded" = the model is there to use. A worker loads it on the
        # next request if it is not resident (after an unload, say); residentModels says what is in memory.
        loaded=bool(checked) and (details is not None if local else True),
        details=details,
        configuredContextSize=row.context_size,
        configuredTemperature=row.temperature,
        configuredTopP=row.top_p,
        configuredRepeatPenalty=row.repeat_penalty,
        configuredNumGpuLayers=row.num_gpu_layers,
        configuredThinkingBudget=row.thinking_budget if row.thinking_budget is not None else -1,
        activeBaseUrl=row.base_url or llm_config.LOCAL_BASE_URL,
        defaultBaseUrl=llm_config.LOCAL_BASE_URL,
        isRemoteBaseUrl=not local,
        hasRemoteApiToken=row.api_token is not None,
        residentModels=resident,
        loadState=(last_load.status if last_load else None),
        loadError=(last_load.error if last_load else None),
        activeModelIsInstruct=active_info.instruct if active_info else None,
        notice=llm_config.base_model_notice(active_info),
    )


@llm_bp.get("/models/<path:name>/estimate-vram")
def estimate_vram(name: str):
    context = forms.as_int("context_size", request.args.get("context_size"), lo=1)
    layers = forms.as_int("num_gpu_layers", request.args.get("num_gpu_layers"), lo=0)
    info = llmstore.find(settings(), name)
    if info is None:
        raise not_found(f"model {name!r} is not in the model store")
    estimate = llmstore.estimate_memory(info, context_size=context, num_gpu_layers=layers)
    return jsonify(model=info.name, num_gpu_layers=layers, **estimate)


@llm_bp.post("/delete-model")
def delete_model():
    body = json_body(dict, "object with modelName")
    name = body.get("modelName")
    if not isinstance(name, str) or not name.strip() or not re.fullmatch(r"[\w.\-]+", name.strip()):
        raise bad_request("modelName must be the file name of a model in the store")
    info = llmstore.find(settings(), name.strip())
    if info is None:
        raise not_found(f"model {name!r} is not in the model store")
    row = llm_config.current()
    if llm_config.is_local(row.base_url) and row.active_model == info.name:
        raise ApiError(409, f"{info.name} is the active model; choose another one before deleting it")
    info.path.unlink(missing_ok=True)
    return jsonify(message=f"Model {info.name} deleted.")
