"""Model sources: what a user types to pull a model (an http(s) URL or a Hugging Face name), read one way.

`resolve_source()` turns it into the URL to fetch and the file name the model gets in the store; the web tier
validates a pull request with it and the download worker resolves with it, so both read a source alike.
"""
from __future__ import annotations

import dataclasses
import re
from urllib.parse import unquote, urlsplit, urlunsplit

from parley.config import get_settings
from parley.errors import InvalidInput

DEFAULT_HF_ENDPOINT = "https://huggingface.co"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_HF_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class SourceError(InvalidInput):
    """What the user gave as a model source is not one we can download; the message says why."""


@dataclasses.dataclass(frozen=True)
class Source:
    """A model source resolved to the URL to fetch and the file name it gets in the store."""

    url: str
    file_name: str
    hub_name: str | None = None  # "owner/repo/path/file.gguf" when the user gave a Hugging Face name


def hf_endpoint() -> str:
    return (get_settings().hf_endpoint or DEFAULT_HF_ENDPOINT).rstrip("/")


def safe_file_name(segment: str) -> str:
    """The store file name for a URL's last path segment: letters, digits, `.`, `_` and `-` only.

    The name is the model's id everywhere and a path component on disk, so anything else (`/`, `..`,
    spaces, percent-escapes) is replaced; the `.gguf` extension is lower-cased because the store
    lists `*.gguf` case-sensitively.
    """
    name = _UNSAFE_NAME_CHARS.sub("_", unquote(segment)).lstrip(".")
    if name.lower().endswith(".gguf"):
        name = name[: -len(".gguf")] + ".gguf"
    if not name.endswith(".gguf") or name == ".gguf" or not name[: -len(".gguf")].strip("._-"):
        raise SourceError(f"{segment!r} is not a usable .gguf file name")
    return name


def resolve_source(text: str) -> Source:
    """An http(s) URL whose path ends in `.gguf`, or a Hugging Face name `owner/repo/path/file.gguf`.

    A hub name becomes `{HF_ENDPOINT}/owner/repo/resolve/main/path/file.gguf`; a hub page URL
    (`.../blob/main/...`) is turned into its download URL (`.../resolve/main/...`), since the page is HTML.
    """
    text = (text or "").strip()
    if not text:
        raise SourceError("modelUrl is required: an http(s) URL of a .gguf file or a Hugging Face name "
                          "owner/repo/file.gguf")
    scheme = _SCHEME.match(text)
    if scheme:
        if scheme.group(1).lower() not in ("http", "https"):
            raise SourceError(f"only http and https URLs can be downloaded, not {scheme.group(1).lower()}:")
        return _resolve_url(text)
    return _resolve_hub_name(text)


def _resolve_url(text: str) -> Source:
    parts = urlsplit(text)
    if not parts.hostname:
        raise SourceError(f"{text!r} is not a valid URL: it has no host")
    path = parts.path
    if not path.lower().endswith(".gguf"):
        raise SourceError(f"the URL must point to a .gguf file; its path {path or '/'!r} does not end in .gguf")
    hub_host = urlsplit(hf_endpoint()).hostname
    if parts.hostname in ("huggingface.co", "hf.co", hub_host) and "/blob/" in path:
        path = path.replace("/blob/", "/resolve/", 1)
    url = urlunsplit((parts.scheme.lower(), parts.netloc, path, parts.query, ""))
    return Source(url=url, file_name=safe_file_name(path.rsplit("/", 1)[-1]))


def _resolve_hub_name(text: str) -> Source:
    segments = text.split("/")
    if len(segments) < 3 or not all(_HF_SEGMENT.match(s) for s in segments):
        raise SourceError(f"{text!r} is neither an http(s) URL nor a Hugging Face name owner/repo/file.gguf")
    if any(s in (".", "..") for s in segments):
        raise SourceError(f"{text!r} is not a valid Hugging Face name")
    if not text.lower().endswith(".gguf"):
        raise SourceError(f"the Hugging Face name must end in .gguf (a file of the repository), got {text!r}")
    owner, repo, *path = segments
    url = f"{hf_endpoint()}/{owner}/{repo}/resolve/main/{'/'.join(path)}"
    return Source(url=url, file_name=safe_file_name(segments[-1]), hub_name=text)
