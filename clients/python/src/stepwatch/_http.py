"""One call of the relay's JSON API, for the tools that ask it something (launching jobs,
reading runs back): where the relay is (``STEPWATCH_URL``), the token
(``STEPWATCH_TOKEN``), and the two ways a call fails: the relay refused
(:class:`Refused`, with its status and its ``{"error": …}`` message) or could not be
reached (:class:`Unreachable`). The trainer's own sending (:mod:`stepwatch._sender`)
has its own loop: it retries and spools instead of raising."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"


def relay_url(url: str | None = None) -> str:
    """``url``, else ``STEPWATCH_URL``, else the default local relay; no trailing ``/``."""
    return (url or os.environ.get("STEPWATCH_URL") or DEFAULT_URL).rstrip("/")


def relay_token(token: str | None = None) -> str | None:
    """``token``, else ``STEPWATCH_TOKEN``, else None (no ``Authorization`` header)."""
    return token or os.environ.get("STEPWATCH_TOKEN") or None


class Refused(Exception):
    """The relay answered with an error status: ``status``, its ``message`` (the answer's
    ``error``, else its text), the ``field`` it names if any, and the whole ``answer``
    when it was a JSON object."""

    def __init__(self, status: int, message: str, answer: dict[str, Any] | None) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.answer = answer or {}
        field = self.answer.get("field")
        self.field: str | None = field if isinstance(field, str) else None


class Unreachable(Exception):
    """Nothing answered at ``url`` (refused connection, unknown host, time-out):
    ``reason`` is the network error."""

    def __init__(self, url: str, reason: BaseException) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


def call(
    method: str,
    path: str,
    body: Any = None,
    url: str | None = None,
    token: str | None = None,
    timeout: float = 30.0,
    raw: bool = False,
) -> Any:
    """``method path`` on the relay (``body`` sent as JSON); the answer's JSON, None when
    it is empty (with ``raw``: its bytes as they came). Raises :class:`Refused` or
    :class:`Unreachable`."""
    base = relay_url(url)
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Accept", "*/*" if raw else "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    tok = relay_token(token)
    if tok:
        req.add_header("Authorization", f"Bearer {tok}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body_bytes: bytes = r.read()
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        message = text.strip()[:500] or str(e.reason)
        answer = None
        try:
            parsed = json.loads(text)
            if isinstance(parsed, dict):
                answer = parsed
                message = str(parsed.get("error") or message)
        except ValueError:
            pass
        raise Refused(e.code, message, answer) from None
    except (urllib.error.URLError, OSError) as e:
        raise Unreachable(base, e) from None
    if raw:
        return body_bytes
    return json.loads(body_bytes) if body_bytes.strip() else None
