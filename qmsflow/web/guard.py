"""The web app's outer guard: security headers on every response, bounded request bodies, no control
characters in paths and query strings.

A pure ASGI middleware (not ``BaseHTTPMiddleware``), outside every route:

- **Body limit.** A ``Content-Length`` over the limit is answered 413 before a byte of the body is
  read; a chunked body is read at most up to the limit, then answered 413. Routes get the body
  already read (at most the limit), so no route can buffer more, whatever it does.
- **Paths and query strings** with control characters (``%00`` and friends) are answered 400: no
  identifier, file name or search term of qmsflow contains one, and a NUL would reach the file
  system (``embedded null byte``) or PostgreSQL (which refuses it in text) as a 500.
- **Security headers** (CSP, nosniff, frame denial, referrer policy, HSTS on https) are added to
  every response that passes here, errors included. The one response that does not pass here is
  Starlette's last-resort 500, so ``app.py``'s handler for it adds ``security_headers`` itself.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_plus

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


def security_headers(https: bool) -> dict[str, str]:
    headers = {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    if https:
        headers["Strict-Transport-Security"] = "max-age=31536000"
    return headers


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


class Guard:
    def __init__(self, app: ASGIApp, max_body: int):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in security_headers(scope.get("scheme") == "https").items()
        ]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in extra if h[0] not in present)]
            await send(message)

        refusal = self._refusal(scope)
        if refusal is None:
            body, refusal = await self._read_body(scope, receive)
        if refusal is not None:
            status, detail = refusal
            await _answer(scope, send_with_headers, status, detail)
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: disconnect notices, as the server sends them

        await self.app(scope, replay, send_with_headers)

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        path = scope.get("path", "")
        query = unquote_plus(scope.get("query_string", b"").decode("latin-1"))
        if _has_control(path) or _has_control(query):
            return 400, "the address contains a control character (such as %00), which no qmsflow address has"
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit():
                    return 400, "Content-Length is not a number"
                if int(value) > self.max_body:
                    return 413, f"the request body is larger than {self.max_body:,} bytes, the limit of this server"
        return None

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes, tuple[int, str] | None]:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return b"", (413, f"the request body is larger than {self.max_body:,} bytes, the limit of this server")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), None


async def _answer(scope: Scope, send: Send, status: int, detail: str) -> None:
    """A refusal in the form the client asked for: JSON for API clients, plain text otherwise."""
    accept = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"accept"), "")
    if "text/html" in accept and not scope.get("path", "").startswith(("/api/", "/slack/", "/jira/")):
        body, kind = f"{status}: {detail}\n".encode(), b"text/plain; charset=utf-8"
    else:
        body, kind = json.dumps({"detail": detail}).encode(), b"application/json"
    headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
