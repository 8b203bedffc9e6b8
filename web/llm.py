"""LLM management: models in the store or on a remote server, the active model and its settings, status."""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from flask import Blueprint, current_app
from pydantic import AfterValidator, ConfigDict

from jobs.heartbeats import alive_workers
from models import LlmJob
from services import llm_choice, llm_config, llmstore, remote_llm
from services.llm_config import LOCAL_BASE_URL
from services.llm_jobs import queue_llm_job
from web.context import settings
from web.declared import (NONBLANK, Confirmation, Field, QueryModel, SparseWireModel, SpecWireModel, WireModel,
                          endpoint, lenient_integer, lenient_number, query_integer)
from web.errors import ApiError, not_found

llm_bp = Blueprint("llm", __name__, url_prefix="/api/llm")

LlmJobState = Literal["queued", "processing", "completed", "failed", "canceled"]  # models.LlmJob.status
QUEUE_DOWN = "Job queue unavailable"
NOT_IN_STORE = "The model is not in the store"


def _engine(value: str | None) -> str | None:
    """None for the local engine (null, empty or its URL), else a remote server's URL without a trailing /."""
    if value is None or llm_config.is_local(value):
        return None
    if not re.fullmatch(llm_config.REMOTE_URL_PATTERN, value):
        raise ValueError(f"must be an http(s) URL with a host and no control characters, got {value!r}")
    return value.rstrip("/")


Engine = Annotated[str | None, AfterValidator(_engine)]


# --- shapes --------------------------------------------------------------------------------------------
class LlmModelDetails(SpecWireModel):
    format: str = Field(description="gguf, or remote for a model of a remote server")
    family: str = Field(description="Architecture (local) or owner (remote)")
    families: list[str] | None
    parameter_size: str = Field(json_schema_extra={"example": "270M"})
    quantization_level: str = Field(json_schema_extra={"example": "Q4_K_M"})


class LlmModelArchitecture(SpecWireModel):
    """From the GGUF header; local models only"""

    num_layers: int | None = Field(ge=0)
    num_attention_heads: int | None = Field(ge=0)
    num_key_value_heads: int | None = Field(ge=0)
    hidden_size: int | None = Field(ge=0)
    head_dim: int | None = Field(ge=0)
    precision: str | None


def _is_none(value: Any) -> bool:
    return value is None


class LlmModelInfo(SparseWireModel):
    """A language model"""

    model_config = ConfigDict(alias_generator=None)  # the sessions client's names: snake_case, but one

    name: str = Field(description="Model id: the GGUF file name in the store, or the remote server's model id")
    modified_at: str = Field(description="Modification time, ISO 8601; empty for remote models")
    size: int = Field(ge=0, description="File size in bytes; 0 for remote models")
    digest: str = Field(description="Unique key of the model")
    details: LlmModelDetails
    default_context_size: int | None = Field(ge=1, alias="defaultContextSize",
                                             description="The model's maximum context, in tokens")
    # Sent inside other answers, where SparseWireModel's own serialisation does not apply, so each of these leaves
    # itself out when None: a remote model has no architecture, a model not resident no size_vram.
    architecture: LlmModelArchitecture | None = Field(None, exclude_if=_is_none)
    size_vram: int | None = Field(None, ge=0, exclude_if=_is_none, description=(
        "Estimated bytes of GPU memory the resident model holds; 0 where no layer is on a GPU (a CPU-only host or "
        "build); only when the model is resident"))

    @classmethod
    def of(cls, info: llmstore.GgufInfo) -> LlmModelInfo:
        return cls.model_validate(llm_config.model_info_dict(info))


class LlmModelList(WireModel):
    models: list[LlmModelInfo]


class LlmModelsQuery(QueryModel):
    base_url: Engine = Field(None, alias="baseUrl", description=(
        f"Engine to list: {LOCAL_BASE_URL} (or empty, or absent) for the local store, else an http(s) URL with a "
        "host"), json_schema_extra={"pattern": "^$|^local://llama\\.cpp$|" + llm_config.REMOTE_URL_PATTERN})


class LlmSetModelRequest(WireModel):
    """The settings to change; a key left out keeps its setting, except contextSize"""

    model_name: str = Field(min_length=1, pattern=NONBLANK, description=(
        "Model to use: a file name in the store (checked when the engine is local) or a remote server's model id; "
        "trimmed"))
    base_url: Engine = Field(None, description=(
        f"Key absent: unchanged. null, empty or {LOCAL_BASE_URL}: the local engine. Otherwise the http(s) URL of "
        "an OpenAI-compatible server"))
    context_size: lenient_integer(minimum=1, maximum=1_048_576) | None = Field(
        None, description="Context size in tokens; null or absent: the model's own")
    temperature: lenient_number(minimum=0, maximum=2) | None = Field(None, description="null or absent: unchanged")
    top_p: lenient_number(minimum=0, maximum=1) | None = Field(None, description="null or absent: unchanged")
    repeat_penalty: lenient_number(minimum=0.5, maximum=2) | None = Field(None, description="null or absent: unchanged")
    num_gpu_layers: lenient_integer(minimum=0, maximum=100_000) | None = Field(
        None, description="Layers offloaded to the GPU; null: all that fit (auto); absent: unchanged")
    thinking_budget: lenient_integer(minimum=-1) | None = Field(
        None, description="-1 unrestricted, 0 off, >0 a token limit; null: unset; absent: unchanged")


class LlmApiTokenRequest(WireModel):
    # The pattern is documented, not enforced here: llm_choice.set_api_token refuses with a message saying why.
    token: str | None = Field(None, description="Bearer token for the remote server, visible ASCII without spaces; "
                              "null, empty or absent clears it",
                              json_schema_extra={"pattern": "^\\s*[\\x21-\\x7e]*\\s*$"})


class LlmApiTokenSaved(WireModel):
    message: str = Field(json_schema_extra={"example": "Remote LLM API token saved."})
    has_remote_api_token: bool


class LlmStatusQuery(QueryModel):
    model_name: str | None = Field(None, alias="modelName", description="Model to describe instead of the active one")


class LlmStatus(WireModel):
    """Status of the language model. residentModels, loadState, loadError, activeModelIsInstruct and notice are
    Parley extensions to the sessions client's LlmStatus"""

    status: Literal["available", "unavailable"] = Field(description="available when an LLM worker is running or "
                                                        "the engine is remote")
    active_model: str = Field(description="The configured model; empty when none is")
    model_checked: str = Field(description="The model whose details are returned: modelName, else activeModel")
    loaded: bool = Field(description="The model is there to use: in the store (local engine) or configured "
                         "(remote). A worker loads it on the next request if it is not resident; see residentModels")
    details: LlmModelInfo | None
    configured_context_size: int | None = Field(ge=1, description="null: the model's own")
    configured_temperature: float
    configured_top_p: float
    configured_repeat_penalty: float
    configured_num_gpu_layers: int | None = Field(ge=0, description="null: auto")
    configured_thinking_budget: int = Field(ge=-1, description="-1 unrestricted (also when unset), 0 off, >0 a "
                                            "limit")
    active_base_url: str = Field(description=f"The engine in use; {LOCAL_BASE_URL} for the local one")
    default_base_url: str = Field(description="The local engine's base URL; never empty",
                                  json_schema_extra={"example": LOCAL_BASE_URL})
    is_remote_base_url: bool
    has_remote_api_token: bool = Field(description="Whether a token is stored; the token itself is never returned")
    resident_models: list[str] = Field(description="Models held in memory by the running LLM workers, sorted")
    load_state: LlmJobState | None = Field(description="State of the latest model load (POST /api/llm/set-model); "
                                           "null if there was none")
    load_error: str | None = Field(description="Why the latest load failed")
    active_model_is_instruct: bool | None = Field(description=(
        "Whether the active local model is an instruct model (a chat template, or an Instruct/Chat/-it fine-tune); "
        "false for a base model such as the offline test model; null for none or remote"))
    notice: str | None = Field(description="A plain warning for the user, e.g. that the active model is a base model "
                               "that continues text instead of answering; null when all is well")


class VramEstimateQuery(QueryModel):
    context_size: query_integer(minimum=1, signed=True, blank_is_default=True) | None = Field(
        None, description="Context in tokens; default the model's own (4096 when unknown)")
    num_gpu_layers: query_integer(minimum=0, signed=True, blank_is_default=True) | None = Field(
        None, description="Layers on the GPU; default all")
    base_url: str | None = Field(None, alias="baseUrl", description="Accepted and ignored")


class VramBreakdown(SpecWireModel):
    weights_bytes: int = Field(ge=0)
    weights_vram_bytes: int = Field(ge=0)
    weights_ram_bytes: int = Field(ge=0)
    kv_cache_bytes: int = Field(ge=0)
    overhead_bytes: int = Field(ge=0)


class VramEstimate(SpecWireModel):
    """Memory a model would need with the given settings"""

    model: str = Field(description="Model file name")
    context_size: int = Field(ge=1, description="Context the estimate is for: context_size, else the model's, else "
                              "4096")
    num_gpu_layers: int | None = Field(ge=0, description="As given; null means all layers")
    vram_per_token_bytes: int = Field(ge=0)
    estimated_vram_bytes: int = Field(ge=0)
    estimated_ram_bytes: int = Field(ge=0)
    breakdown: VramBreakdown


class LlmDeleteModelRequest(WireModel):
    model_name: str = Field(min_length=1, pattern=r"^\s*[\w.\-]+\s*$", description="File name of a model in the "
                            "store (letters, digits, _ . -); trimmed")


# --- endpoints -----------------------------------------------------------------------------------------
def _remote_models(base_url: str, token: str | None) -> list[LlmModelInfo]:
    """The model list of an OpenAI-compatible server."""
    try:
        data = remote_llm.list_models(base_url, token)
    except remote_llm.RemoteUnavailable as exc:
        raise ApiError(502, str(exc)) from None
    return [LlmModelInfo(
        name=m["id"], modified_at="", size=0, digest=m["id"], default_context_size=_context_length(m),
        details=LlmModelDetails(format="remote", family=m["owned_by"], families=None, parameter_size="",
                                quantization_level="")) for m in data]


def _context_length(model: dict) -> int | None:
    # Whatever a server reports: a length that is not a positive integer is not known.
    length = model["context_length"]
    return length if isinstance(length, int) and not isinstance(length, bool) and length > 0 else None


@llm_bp.get("/available-models")
@endpoint(tag="llm", operation_id="list_llm_models", query=LlmModelsQuery, responses={
    200: (LlmModelList, "The models"),
    400: "baseUrl is neither the local engine nor an http(s) URL",
    502: "The remote server did not answer with a model list"})
def available_models(query: LlmModelsQuery):
    """Models of the local store, or of a remote OpenAI-compatible server

    Without baseUrl, or with the local engine's URL (local://llama.cpp), the GGUF models of the store; otherwise the
    model list (GET <baseUrl>/v1/models) of that server, asked with the stored API token.
    """
    if query.base_url:
        return LlmModelList(models=_remote_models(query.base_url, llm_config.current().api_token))
    return LlmModelList(models=[LlmModelInfo.of(i) for i in llmstore.list_models(settings())])


@llm_bp.post("/set-model")
@endpoint(tag="llm", operation_id="set_llm_model", json=LlmSetModelRequest, responses={
    200: (Confirmation, '"Active model set to <name> (context: <size or default>). Load initiated. Check status."'),
    400: "Body not a JSON object; modelName missing or blank; a value of the wrong type or out of range; baseUrl "
         "not an http(s) URL; with the local engine, a model not in the store",
    503: f"{QUEUE_DOWN}; the settings are saved but the load is not queued"})
def set_model(json: LlmSetModelRequest):
    """Choose the active model and its settings, and queue its load

    Answers at once; an LLM worker loads the model in the background. Follow it with GET /api/llm/status
    (loadState, residentModels).
    """
    given = json.model_fields_set
    changes: dict = {"context_size": json.context_size}
    # Absent keeps a setting; for these, null sets it (the local engine, all layers, no budget).
    changes |= {column: getattr(json, column) for column in ("base_url", "num_gpu_layers", "thinking_budget")
                if column in given}
    changes |= {column: getattr(json, column) for column in ("temperature", "top_p", "repeat_penalty")
                if getattr(json, column) is not None}
    llm_choice.choose_model(settings(), json.model_name, **changes)
    size = json.context_size or "default"
    return Confirmation(message=f"Active model set to {json.model_name} (context: {size}). Load initiated. "
                                "Check status.")


@llm_bp.post("/unload")
@endpoint(tag="llm", operation_id="unload_llm_model", responses={
    200: (Confirmation, '"<n> model instance(s) unloaded successfully." or "No models were loaded."'),
    503: QUEUE_DOWN})
def unload():
    """Unload the model from the LLM workers

    No body. The active model stays configured (loaded stays true); a worker loads it again on the next request.
    """
    resident = [w for w in _llm_workers() if w.get("llm_resident")]
    if not resident:
        return Confirmation(message="No models were loaded.")
    queue_llm_job("unload_model")
    return Confirmation(message=f"{len(resident)} model instance(s) unloaded successfully.")


@llm_bp.post("/api-token")
@endpoint(tag="llm", operation_id="set_llm_api_token", json=LlmApiTokenRequest, responses={
    200: (LlmApiTokenSaved, "Saved or cleared"),
    400: "Body not a JSON object, or token neither a string nor null, or not visible ASCII without spaces (it is "
         "sent in an Authorization header)"})
def api_token(json: LlmApiTokenRequest):
    """Store or clear the remote server's API token"""
    token = json.token or None
    llm_choice.set_api_token(token)
    return LlmApiTokenSaved(message="Remote LLM API token saved." if token else "Remote LLM API token cleared.",
                            has_remote_api_token=token is not None)


def _llm_workers() -> list[dict]:
    try:
        return [w for w in alive_workers(current_app.extensions["parley_redis"]) if "llm" in w.get("queues", [])]
    except Exception:  # noqa: BLE001  (status must answer even with Redis away)
        return []


@llm_bp.get("/status")
@endpoint(tag="llm", operation_id="llm_status", query=LlmStatusQuery, responses={200: (LlmStatus, "Status")})
def status(query: LlmStatusQuery):
    """The active model, its settings and whether it is loaded

    Answers even when Redis is away (then no worker counts as running).
    """
    row = llm_config.current()
    checked = query.model_name or row.active_model
    local = llm_config.is_local(row.base_url)
    details = info = None
    if local and checked:
        info = llmstore.find(settings(), checked)
        details = LlmModelInfo.of(info) if info else None
    workers = _llm_workers()
    resident = sorted({w["llm_resident"] for w in workers if w.get("llm_resident")})
    if details and checked in resident:
        # GPU memory only where a worker holding the model really offloaded it: a CPU-only host reports 0,
        # not the estimate of what a GPU would hold (the client would show "100% offloaded to GPU").
        on_gpu = any(w.get("llm_on_gpu") for w in workers if w.get("llm_resident") == checked)
        details.size_vram = 0 if not on_gpu else llmstore.estimate_memory(
            info, context_size=row.context_size, num_gpu_layers=row.num_gpu_layers)["estimated_vram_bytes"]
    last_load = (LlmJob.select().where(LlmJob.kind == "load_model").order_by(LlmJob.created_at_ms.desc()).first())
    # The store is listed once per lookup: reuse the checked model's when it is the active one.
    active_info = info if checked == row.active_model else (
        llmstore.find(settings(), row.active_model) if local and row.active_model else None)
    return LlmStatus(
        status="available" if workers or not local else "unavailable",
        active_model=row.active_model,
        model_checked=checked,
        # As the sessions client expects: "loaded" = the model is there to use. A worker loads it on the
        # next request if it is not resident (after an unload, say); residentModels says what is in memory.
        loaded=bool(checked) and (details is not None if local else True),
        details=details,
        configured_context_size=row.context_size,
        configured_temperature=row.temperature,
        configured_top_p=row.top_p,
        configured_repeat_penalty=row.repeat_penalty,
        configured_num_gpu_layers=row.num_gpu_layers,
        configured_thinking_budget=row.thinking_budget if row.thinking_budget is not None else -1,
        active_base_url=row.base_url or LOCAL_BASE_URL,
        default_base_url=LOCAL_BASE_URL,
        is_remote_base_url=not local,
        has_remote_api_token=row.api_token is not None,
        resident_models=resident,
        load_state=last_load.status if last_load else None,
        load_error=last_load.error if last_load else None,
        active_model_is_instruct=active_info.instruct if active_info else None,
        notice=llm_config.base_model_notice(active_info),
    )


@llm_bp.get("/models/<path:name>/estimate-vram")
@endpoint(tag="llm", operation_id="estimate_llm_vram", query=VramEstimateQuery,
          path_parameters={"name": "File name of a model in the store (URL-encoded)"},
          responses={200: (VramEstimate, "The estimate"),
                     400: "context_size is not a positive integer, or num_gpu_layers not a non-negative one",
                     404: NOT_IN_STORE})
def estimate_vram(name: str, query: VramEstimateQuery):
    """Estimate the memory a model of the store needs"""
    info = llmstore.find(settings(), name)
    if info is None:
        raise not_found(f"model {name!r} is not in the model store")
    estimate = llmstore.estimate_memory(info, context_size=query.context_size, num_gpu_layers=query.num_gpu_layers)
    return VramEstimate.model_validate({"model": info.name, "num_gpu_layers": query.num_gpu_layers, **estimate})


@llm_bp.post("/delete-model")
@endpoint(tag="llm", operation_id="delete_llm_model", json=LlmDeleteModelRequest, responses={
    200: (Confirmation, '"Model <name> deleted."'),
    400: "Body not a JSON object, or modelName not a file name (letters, digits, _ . -)",
    404: NOT_IN_STORE,
    409: "It is the active model of the local engine"})
def delete_model(json: LlmDeleteModelRequest):
    """Delete a model from the store"""
    info = llmstore.find(settings(), json.model_name)
    if info is None:
        raise not_found(f"model {json.model_name!r} is not in the model store")
    row = llm_config.current()
    if llm_config.is_local(row.base_url) and row.active_model == info.name:
        raise ApiError(409, f"{info.name} is the active model; choose another one before deleting it")
    info.path.unlink(missing_ok=True)
    return Confirmation(message=f"Model {info.name} deleted.")
