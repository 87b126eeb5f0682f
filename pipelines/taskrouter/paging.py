"""Paging by ``meta.next_page_url``, and the guards that keep it safe; no HTTP in here.

TaskRouter's next page URL is absolute and carries an opaque ``PageToken``: it is followed
exactly as given, never rebuilt (docs/design.md). ``PageFollower`` checks each page as it
arrives: the envelope names its list, the next URL is a URL on the configured origin (anything
else would receive the account's credentials) and does not point back to a page already read
(which would be read forever, rows piling up). Each refusal is a row of ``ERRORS``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

from pipelines.taskrouter.errors import make_error
from pipelines.taskrouter.retry import BodyFault

Origin = tuple[str, str, int]


def with_query(url: str, params: dict[str, Any]) -> str:
    """``url`` with ``params`` appended to its query, encoded as requests encodes them."""
    pairs = [(k, v) for k, v in params.items() if v is not None]
    if not pairs:
        return url
    return f"{url}{'&' if '?' in url else '?'}{urlencode(pairs, doseq=True)}"


def origin(url: str) -> Origin:
    """(scheme, host, port) of an absolute URL; ValueError for one that has none of them."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)  # ValueError: a port out of range
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an absolute http(s) URL")
    return scheme, parts.hostname.lower(), port


def direct_prefix(base_url: str) -> str | None:
    """``base_url + "/"`` when URLs starting with it may skip the origin check (and take the
    client's direct path); None for a base URL with a query or fragment, or no host."""
    base = urlsplit(base_url)
    direct = base.scheme in ("http", "https") and bool(base.hostname)
    return f"{base_url}/" if direct and not (base.query or base.fragment) else None


def check_same_origin(url: str, base_url: str, path: str | None = None) -> None:
    """Refuse ``url`` unless it is on ``base_url``'s origin (the credentials go nowhere else)."""
    try:
        theirs = origin(url)
    except ValueError as exc:
        raise make_error("unusable_next_url", path=path, detail=exc) from None
    if theirs != origin(base_url):
        scheme, host, port = theirs
        raise make_error("foreign_next_url", detail=f"{scheme}://{host}:{port}",
                         base_url=base_url)


def unwrap_page(body: dict[str, Any], path: str) -> tuple[list[dict[str, Any]], str | None]:
    """The records of a list page (under ``meta.key``) and its next URL (None on the last)."""
    meta = body.get("meta")
    key = meta.get("key") if isinstance(meta, dict) else None
    records = body.get(key) if isinstance(key, str) else None
    if not isinstance(records, list):
        raise make_error("bad_page", path=path)
    next_url = meta.get("next_page_url")  # type: ignore[union-attr]
    if next_url is not None and not isinstance(next_url, str):
        raise make_error("bad_next_url", path=path)
    return records, next_url or None


@dataclass
class PageFollower:
    """The pages of one list: ``take`` each body as it arrives, ``check_next`` the URL it names."""

    base_url: str
    path: str
    followed: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._prefix = direct_prefix(self.base_url)

    def take(self, url: str, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        """The records of the page read from ``url``, and the URL of the next one."""
        self.followed.add(url)
        return unwrap_page(body, self.path)

    def check_next(self, next_url: str | None) -> None:
        """Refuse a next page already read, or on another origin, before it is asked for."""
        if next_url is None:
            return
        if next_url in self.followed:
            raise make_error("repeated_page", path=self.path, detail=len(self.followed))
        if self._prefix is None or not next_url.startswith(self._prefix):
            check_same_origin(next_url, self.base_url, self.path)


def parse_body(content: bytes) -> dict[str, Any]:
    """A response body as a JSON object: orjson, else ``lenient_json``; a ``BodyFault`` when it
    is not one (retried like a truncated body)."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        body = lenient_json(content)
    if not isinstance(body, dict):
        raise BodyFault("not_object", "response body is not a JSON object")
    return body


def lenient_json(content: bytes) -> Any:
    """What orjson refuses but JSON allows: an escaped lone surrogate (``"\\ud83d"``, an emoji
    cut in half), or nesting deeper than orjson reads. The standard library parses those;
    lone surrogates become U+FFFD, since no database driver can encode them. Anything else
    is a body fault."""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        raise BodyFault("bad_json", "response body is not valid JSON") from None
    return without_surrogates(body)


def without_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {without_surrogates(k): without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_surrogates(v) for v in value]
    return value
