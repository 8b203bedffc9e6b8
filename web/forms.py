"""Reading request fields into typed values, with a 400 that names the field when one is wrong."""
from __future__ import annotations

from parley.config import Settings
from parley.languages import WHISPER_LANGUAGES
from services import modelstore
from web.declared import INT64_MAX
from web.errors import bad_request


def as_int(name: str, value, *, default: int | None = None, lo: int | None = None, hi: int | None = None) -> int | None:
    if value is None or value == "":
        return default
    try:
        number = int(str(value).strip()) if not isinstance(value, int) or isinstance(value, bool) else value
    except ValueError:
        raise bad_request(f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, bool):
        raise bad_request(f"{name} must be an integer, got {value!r}")
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise bad_request(f"{name} must be between {lo} and {hi}, got {number}")
    if abs(number) > INT64_MAX:  # the database stores 64-bit integers; a larger one is an OverflowError there
        raise bad_request(f"{name} is out of range, got {number}")
    return number


def whisper_model(settings: Settings, value: str | None, *, default: str) -> str:
    """A model name that is known AND in the store, or a 400 listing what would work."""
    try:
        name = modelstore.canonical_name(value or default)
    except modelstore.ModelStoreError as exc:
        raise bad_request(str(exc)) from None
    if not modelstore.is_downloaded(settings.model_dir, name):
        have = [m["name"] for m in modelstore.list_models(settings.model_dir) if m["is_downloaded"]]
        raise bad_request(f"model {name!r} is not downloaded (run `parley models pull {name}`); "
                          f"downloaded models: {', '.join(have) or 'none'}")
    return name


def language(value: str | None, *, model: str) -> str | None:
    if value is None or not str(value).strip():
        return None
    code = str(value).strip().lower()
    if code not in WHISPER_LANGUAGES:
        raise bad_request(f"unknown language {value!r}; valid languages: {', '.join(WHISPER_LANGUAGES)}")
    if modelstore.MODELS[model].english_only and code != "en":
        raise bad_request(f"model {model!r} is English-only; use a multilingual model for language {code!r}")
    return code
