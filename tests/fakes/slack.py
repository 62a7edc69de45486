"""A fake Slack Web API server over real HTTP on 127.0.0.1, for tests that drive the real
``slack_sdk.WebClient``::

    with FakeSlack(users=[{"id": "U0ANA", "email": "ana@example.com", "name": "ana"}]) as fake:
        client = WebClient(token=fake.token, base_url=fake.base_url)
        client.chat_postMessage(channel="C0123456789", text="hi")
        assert fake.calls_to("chat.postMessage")[0].params["text"] == "hi"

Standard library only: a ``ThreadingHTTPServer`` on a free port, served from a daemon thread.

Served methods (POST or GET ``/api/<method>``; bodies as application/x-www-form-urlencoded,
application/json or multipart/form-data; JSON-valued fields such as ``blocks`` or ``view`` may arrive
as JSON strings in form bodies and are parsed): ``chat.postMessage``, ``chat.update``, ``views.open``,
``users.lookupByEmail``, ``conversations.open``, ``auth.test``. Anything else answers
``{"ok": false, "error": "unknown_method"}``.

Response bodies follow Slack's OpenAPI 2 spec (``shared/contracts/slack-web-api.openapi-v2.json``,
checked by ``tests/integration/test_fake_slack.py``), with these known departures, which follow real Slack:

- HTTP 429 (``rate_limit_next``) answers ``{"ok": false, "error": "ratelimited"}`` plus a
  ``Retry-After`` header, as Slack does; ``ratelimited`` is in no method's error enum of the spec.
- ``chat.update`` answers ``message.blocks`` as an array of blocks, as Slack does; the spec says
  ``"type": "object"`` there (and uses the array ``#/definitions/blocks`` everywhere else).
- Malformed ``blocks`` answer ``invalid_blocks_format`` / ``invalid_blocks`` and malformed JSON bodies
  ``invalid_json`` / ``json_not_object``, Slack's errors that the 2020 spec's enums partly predate.
- An outage (``go_down``) answers HTTP 503 with a plain-text body: that is an infrastructure
  failure, not a Web API method response, so the spec does not describe it.

To keep bodies valid, use Slack-shaped ids: users ``U``/``W`` + 2 or more of [A-Z0-9] (checked when
the fake is built), channels ``C``/``G``/``D`` + 8 or more of [A-Z0-9] (passed through as given). A
user id given as ``channel`` answers the DM id ``"D" + rest``, right-padded with ``0`` to the spec's
minimum length when the user id is short (``U0ANA`` -> ``D0ANA0000``); ``dm_channel_for`` gives it.
A channel name (``general`` or ``#general``) answers a stable generated ``C...`` id. User ids the fake
does not know (not in ``users``, not the bot ``U0FAKEBOT``) answer ``channel_not_found``
(chat.postMessage) or ``user_not_found`` (conversations.open), as Slack would.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .base import LocalHTTPFake

__all__ = ["Call", "FakeSlack"]

# Fields that carry JSON structures; form bodies send them as JSON strings.
_JSON_FIELDS = ("blocks", "attachments", "view", "metadata", "user_auth_blocks")

_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]+$")
_MIN_CHANNEL_ID_CHARS = 8  # after the leading C/G/D, per the spec's defs_channel / defs_dm_id


@dataclass
class Call:
    """One HTTP request the fake received.

    ``params``: query string and body merged, JSON-valued fields parsed. ``headers``: request headers
    with lower-cased names (``call.headers["authorization"]``). ``status`` and ``response``: what the
    fake answered (HTTP status; parsed JSON body, or the text of a non-JSON body).
    """

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    status: int | None = None
    response: Any = None


@dataclass
class _Injection:
    kind: str  # "fail" | "ratelimit"
    error: str = ""
    retry_after: int = 1


@dataclass
class _State:
    calls: list[Call] = field(default_factory=list)
    messages: dict[tuple[str, str], dict] = field(default_factory=dict)
    views: list[dict] = field(default_factory=list)
    injections: dict[str, deque[_Injection]] = field(default_factory=dict)
    open_conversations: set[str] = field(default_factory=set)
    ephemerals: list[dict] = field(default_factory=list)


class FakeSlack(LocalHTTPFake):
    """A fake Slack Web API on ``http://127.0.0.1:<free port>/api/``. See the module docstring."""

    team_id = "T0FAKETEAM"
    team_name = "Fake Workspace"
    team_url = "https://fake-workspace.slack.com/"
    bot_user_id = "U0FAKEBOT"
    bot_user_name = "qmsflow"
    bot_id = "B0FAKEBOT1"
    app_id = "A0FAKEAPP1"

    def __init__(self, users: list[dict] | None = None, token: str = "xoxb-test", app_token: str = "xapp-test") -> None:
        super().__init__(_Handler)
        self.token = token
        self.app_token = app_token
        self.socket_url: str | None = None  # what apps.connections.open answers (Socket Mode tests set it)
        self.users: list[dict] = [dict(u) for u in (users or [])]
        for user in self.users:
            uid = user.get("id", "")
            if not isinstance(uid, str) or not _USER_ID.match(uid):
                raise ValueError(f"FakeSlack user id {uid!r} is not Slack-shaped (U or W + [A-Z0-9]{{2,}})")
            if not user.get("email"):
                raise ValueError(f"FakeSlack user {uid} needs an email")
        self._lock = threading.RLock()
        self._state = _State()
        self._down = False
        self._ts_micros = 1764100000_000000  # next ts: 1764100000.000100, then +100 µs each
        self._view_seq = 0

    # ------------------------------------------------------------------ addresses

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    # ------------------------------------------------------------------ inspection

    @property
    def calls(self) -> list[Call]:
        return self._state.calls

    @property
    def messages(self) -> dict[tuple[str, str], dict]:
        return self._state.messages

    @property
    def views(self) -> list[dict]:
        return self._state.views

    @property
    def ephemerals(self) -> list[dict]:
        """Ephemeral messages posted: channel, user, ts, text, blocks."""
        return self._state.ephemerals

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self._state.calls if c.method == method]

    @staticmethod
    def dm_channel_for(user_id: str) -> str:
        """The DM channel id the fake answers for a user id: "D" + rest, padded with 0 to 8 chars."""
        return "D" + user_id[1:].ljust(_MIN_CHANNEL_ID_CHARS, "0")

    # ------------------------------------------------------------------ injections

    def fail_next(self, method: str, error: str, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer HTTP 200 ``{"ok": false, "error": error}``."""
        self._inject(method, _Injection("fail", error=error), times)

    def rate_limit_next(self, method: str, retry_after: int = 1, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer HTTP 429 with ``Retry-After: retry_after``."""
        self._inject(method, _Injection("ratelimit", retry_after=int(retry_after)), times)

    def _inject(self, method: str, injection: _Injection, times: int) -> None:
        with self._lock:
            queue = self._state.injections.setdefault(method, deque())
            queue.extend(injection for _ in range(times))

    def go_down(self) -> None:
        """Until ``come_up``: every request answers HTTP 503 (a simulated outage)."""
        self._down = True

    def come_up(self) -> None:
        self._down = False

    def reset(self) -> None:
        """Forget calls, messages, views, opened conversations, injections and any outage."""
        with self._lock:  # cleared in place: lists/dicts held by a test stay the live ones
            state = self._state
            state.calls.clear()
            state.messages.clear()
            state.views.clear()
            state.injections.clear()
            state.open_conversations.clear()
            state.ephemerals.clear()
            self._down = False

    # ------------------------------------------------------------------ request handling

    def _handle(self, method: str, params: dict[str, Any], headers: dict[str, str], body_error: str | None):
        """Returns (status, extra headers, body): body a dict (JSON) or a str (plain text)."""
        call = Call(method=method, params=params, headers=headers)
        with self._lock:
            self._state.calls.append(call)
            if self._down:
                status, extra, body = 503, {}, "Service Unavailable"
            else:
                status, extra, body = self._answer(method, params, headers, body_error)
            call.status, call.response = status, body
        return status, extra, body

    def _answer(self, method: str, params: dict[str, Any], headers: dict[str, str], body_error: str | None):
        queue = self._state.injections.get(method)
        if queue:
            injection = queue.popleft()
            if injection.kind == "ratelimit":
                return 429, {"Retry-After": str(injection.retry_after)}, _error("ratelimited")
            return 200, {}, _error(injection.error)

        authorization = headers.get("authorization", "")
        if authorization.startswith("Bearer "):
            given = authorization[len("Bearer ") :]
        else:
            given = params.get("token") or ""  # Slack also takes the token as a body parameter
        if not given:
            return 200, {}, _error("not_authed")
        if given != self.token and not (method == "apps.connections.open" and given == self.app_token):
            return 200, {}, _error("invalid_auth")
        if body_error:
            return 200, {}, _error(body_error)

        handler = _METHODS.get(method)
        if method == "apps.connections.open":  # Socket Mode: app-level token, not the bot token
            if given != self.app_token:
                return 200, {}, _error("invalid_auth")
        elif handler is None:
            return 200, {}, _error("unknown_method")
        return 200, {}, handler(self, params)

    # ------------------------------------------------------------------ helpers

    def _next_ts(self) -> str:
        self._ts_micros += 100
        seconds, micros = divmod(self._ts_micros, 1_000_000)
        return f"{seconds}.{micros:06d}"

    def _user_by_id(self, user_id: str) -> dict | None:
        return next((u for u in self.users if u["id"] == user_id), None)

    def _known_user(self, user_id: str) -> bool:
        return user_id == self.bot_user_id or self._user_by_id(user_id) is not None

    def _resolve_channel(self, channel: Any) -> str | None:
        """The conversation id Slack would answer for a ``channel`` argument, or None if unknown."""
        if not isinstance(channel, str) or not channel.strip():
            return None
        channel = channel.strip()
        if _USER_ID.match(channel):
            return self.dm_channel_for(channel) if self._known_user(channel) else None
        if _CHANNEL_ID.match(channel):
            return channel
        name = channel.lstrip("#").lower()
        if not re.fullmatch(r"[a-z0-9_\-]{1,80}", name):
            return None
        return "C" + hashlib.sha1(name.encode()).hexdigest()[:10].upper()

    def _user_object(self, user: dict) -> dict:
        name = user.get("name") or user["email"].split("@")[0]
        real_name = user.get("real_name") or name
        display_name = user.get("display_name", "")
        profile = {
            "title": user.get("title", ""),
            "phone": "",
            "skype": "",
            "real_name": real_name,
            "real_name_normalized": real_name,
            "display_name": display_name,
            "display_name_normalized": display_name,
            "fields": None,
            "status_text": "",
            "status_emoji": "",
            "status_expiration": 0,
            "avatar_hash": "g0000000000a",
            "email": user["email"],
            "first_name": real_name.split(" ")[0],
            "last_name": " ".join(real_name.split(" ")[1:]),
            "team": self.team_id,
        }
        obj = {
            "id": user["id"],
            "team_id": self.team_id,
            "name": name,
            "deleted": False,
            "color": "9f69e7",
            "real_name": real_name,
            "tz": "Europe/Berlin",
            "tz_label": "Central European Time",
            "tz_offset": 3600,
            "profile": profile,
            "is_admin": False,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": False,
            "is_app_user": False,
            "updated": 1764000000,
        }
        for key, value in user.items():
            if key not in ("email", "display_name", "title"):
                obj[key] = value
        return obj


def _error(error: str) -> dict:
    return {"ok": False, "error": error}


def _message_content(params: dict[str, Any]) -> tuple[dict, str | None]:
    """The text/blocks/attachments given, or an error code."""
    content: dict[str, Any] = {}
    if "text" in params and params["text"] is not None:
        content["text"] = str(params["text"])
    for key in ("blocks", "attachments"):
        value = params.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            return {}, "invalid_blocks_format" if key == "blocks" else "invalid_attachments"
        if key == "blocks" and not all(isinstance(b.get("type"), str) for b in value):
            return {}, "invalid_blocks"
        content[key] = value
    return content, None


# ---------------------------------------------------------------------- methods


def _chat_post_message(fake: FakeSlack, params: dict[str, Any]) -> dict:
    channel = fake._resolve_channel(params.get("channel"))
    if channel is None:
        return _error("channel_not_found")
    content, error = _message_content(params)
    if error:
        return _error(error)
    if not content.get("text") and not content.get("blocks") and not content.get("attachments"):
        return _error("no_text")
    ts = fake._next_ts()
    message: dict[str, Any] = {
        "type": "message",
        "user": fake.bot_user_id,
        "bot_id": fake.bot_id,
        "team": fake.team_id,
        "text": content.get("text", ""),
        "blocks": content.get("blocks", []),
        "ts": ts,
    }
    if "attachments" in content:
        message["attachments"] = content["attachments"]
    thread_ts = params.get("thread_ts")
    if isinstance(thread_ts, str) and thread_ts:
        message["thread_ts"] = thread_ts
    fake._state.messages[(channel, ts)] = message
    return {"ok": True, "channel": channel, "ts": ts, "message": json.loads(json.dumps(message))}


def _chat_post_ephemeral(fake: FakeSlack, params: dict[str, Any]) -> dict:
    """An ephemeral message: shown only to ``user``, in ``channel``; Slack keeps no copy of it."""
    channel = fake._resolve_channel(params.get("channel"))
    if channel is None:
        return _error("channel_not_found")
    user = params.get("user")
    if not isinstance(user, str) or not fake._known_user(user):
        return _error("user_not_in_channel")
    content, error = _message_content(params)
    if error:
        return _error(error)
    if not content.get("text") and not content.get("blocks") and not content.get("attachments"):
        return _error("no_text")
    ts = fake._next_ts()
    fake._state.ephemerals.append({"channel": channel, "user": user, "ts": ts, **content})
    return {"ok": True, "message_ts": ts}


def _chat_update(fake: FakeSlack, params: dict[str, Any]) -> dict:
    channel = fake._resolve_channel(params.get("channel"))
    if channel is None:
        return _error("channel_not_found")
    ts = params.get("ts")
    message = fake._state.messages.get((channel, ts)) if isinstance(ts, str) else None
    if message is None:
        return _error("message_not_found")
    content, error = _message_content(params)
    if error:
        return _error(error)
    if not content.get("text") and not content.get("blocks") and not content.get("attachments"):
        return _error("no_text")
    # Slack keeps what is not given: omitted blocks stay, an empty list removes them.
    updated = dict(message)
    updated.update(content)
    fake._state.messages[(channel, ts)] = updated
    return {
        "ok": True,
        "channel": channel,
        "ts": ts,
        "text": updated["text"],
        "message": json.loads(json.dumps(updated)),
    }


def _views_open(fake: FakeSlack, params: dict[str, Any]) -> dict:
    trigger_id = params.get("trigger_id") or params.get("interactivity_pointer")
    view = params.get("view")
    if not trigger_id or not isinstance(view, dict) or not view.get("type"):
        return _error("invalid_arguments")
    fake._view_seq += 1
    view_id = f"V{fake._view_seq:010d}"
    recorded = json.loads(json.dumps(view))
    recorded["trigger_id"] = trigger_id
    recorded["id"] = view_id
    fake._state.views.append(recorded)
    answered = {
        "id": view_id,
        "team_id": fake.team_id,
        "type": view["type"],
        "blocks": view.get("blocks", []),
        "private_metadata": view.get("private_metadata", ""),
        "callback_id": view.get("callback_id", ""),
        "external_id": view.get("external_id", ""),
        "state": {"values": {}},
        "hash": f"{fake._next_ts()}.fake{fake._view_seq:04d}",
        "clear_on_close": bool(view.get("clear_on_close", False)),
        "notify_on_close": bool(view.get("notify_on_close", False)),
        "root_view_id": view_id,
        "previous_view_id": None,
        "app_id": fake.app_id,
        "bot_id": fake.bot_id,
    }
    for key in ("title", "submit", "close"):
        if key in view:
            answered[key] = view[key]
    return {"ok": True, "view": json.loads(json.dumps(answered))}


def _users_lookup_by_email(fake: FakeSlack, params: dict[str, Any]) -> dict:
    address = str(params.get("email") or "").strip().lower()
    user = next((u for u in fake.users if u["email"].lower() == address), None) if address else None
    if user is None:
        return _error("users_not_found")
    return {"ok": True, "user": fake._user_object(user)}


def _conversations_open(fake: FakeSlack, params: dict[str, Any]) -> dict:
    channel = params.get("channel")
    users = params.get("users")
    if channel:
        resolved = fake._resolve_channel(channel)
        if resolved is None:
            return _error("channel_not_found")
        return {"ok": True, "no_op": True, "already_open": True, "channel": {"id": resolved}}
    if isinstance(users, str):
        ids = [u.strip() for u in users.split(",") if u.strip()]
    elif isinstance(users, list):
        ids = [str(u).strip() for u in users if str(u).strip()]
    else:
        ids = []
    if not ids:
        return _error("users_list_not_supplied")
    for uid in ids:
        if not _USER_ID.match(uid) or not fake._known_user(uid):
            return _error("user_not_found")
    others = sorted(set(ids) - {fake.bot_user_id}) or [fake.bot_user_id]
    if len(others) > 8:
        return _error("too_many_users")
    if len(others) == 1:
        conv_id = fake.dm_channel_for(others[0])
    else:
        conv_id = "G" + hashlib.sha1(",".join(others).encode()).hexdigest()[:10].upper()
    already = conv_id in fake._state.open_conversations
    fake._state.open_conversations.add(conv_id)
    channel_obj: dict[str, Any] = {"id": conv_id}
    if len(others) > 1:  # a multi-person DM: the spec only admits the full conversation object
        names = [(fake._user_by_id(u) or {}).get("name") or u.lower() for u in others]
        name = "mpdm-" + "--".join(names) + "-1"
        empty = {"value": "", "creator": "", "last_set": 0}
        channel_obj.update(
            {
                "name": name,
                "name_normalized": name,
                "created": 1764000000,
                "creator": fake.bot_user_id,
                "is_archived": False,
                "is_channel": False,
                "is_general": False,
                "is_mpim": True,
                "is_group": False,
                "is_im": False,
                "is_org_shared": False,
                "is_shared": False,
                "is_private": True,
                "topic": dict(empty),
                "purpose": dict(empty),
            }
        )
    body: dict[str, Any] = {"ok": True, "channel": channel_obj}
    if already:
        body["no_op"] = True
        body["already_open"] = True
    return body


def _auth_test(fake: FakeSlack, params: dict[str, Any]) -> dict:
    return {
        "ok": True,
        "url": fake.team_url,
        "team": fake.team_name,
        "user": fake.bot_user_name,
        "team_id": fake.team_id,
        "user_id": fake.bot_user_id,
        "bot_id": fake.bot_id,
        "is_enterprise_install": False,
    }


def _apps_connections_open(fake: FakeSlack, params: dict[str, Any]) -> dict:
    if not fake.socket_url:
        return _error("not_allowed_token_type")
    return {"ok": True, "url": fake.socket_url}


_METHODS = {
    "apps.connections.open": _apps_connections_open,
    "chat.postMessage": _chat_post_message,
    "chat.update": _chat_update,
    "chat.postEphemeral": _chat_post_ephemeral,
    "views.open": _views_open,
    "users.lookupByEmail": _users_lookup_by_email,
    "conversations.open": _conversations_open,
    "auth.test": _auth_test,
}


# ---------------------------------------------------------------------- HTTP


def _parse_body(content_type: str, raw: bytes) -> tuple[dict[str, Any], str | None]:
    """Body parameters and, for a malformed JSON body, Slack's error code."""
    mime = content_type.split(";")[0].strip().lower()
    if not raw:
        return {}, None
    if mime == "application/json":
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {}, "invalid_json"
        if not isinstance(data, dict):
            return {}, "json_not_object"
        return data, None
    if mime == "multipart/form-data":
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw
        )
        params: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not name:
                continue
            payload = part.get_payload(decode=True) or b""
            if part.get_filename():
                params[name] = payload
            else:
                params[name] = payload.decode(part.get_content_charset() or "utf-8")
        return params, None
    # application/x-www-form-urlencoded (also the fallback: Slack is lenient here)
    return _flatten(parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)), None


def _flatten(query: dict[str, list[str]]) -> dict[str, Any]:
    return {k: (v[0] if len(v) == 1 else v) for k, v in query.items()}


def _decode_json_fields(params: dict[str, Any]) -> dict[str, Any]:
    for key in _JSON_FIELDS:
        value = params.get(key)
        if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
            try:
                params[key] = json.loads(value)
            except json.JSONDecodeError:
                pass  # left as a string: the method answers invalid_blocks_format or the like
    return params


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeSlack/1.0"

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def do_GET(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        fake: FakeSlack = self.server.fake  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if not url.path.startswith("/api/") or len(url.path) <= len("/api/"):
            self._send(404, {}, "Not Found")
            return
        method = url.path[len("/api/") :].strip("/")
        params = _flatten(parse_qs(url.query, keep_blank_values=True))
        body_params, body_error = _parse_body(self.headers.get("Content-Type", ""), raw)
        params.update(body_params)
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, body = fake._handle(method, _decode_json_fields(params), headers, body_error)
        self._send(status, extra, body)

    def _send(self, status: int, extra: dict[str, str], body: Any) -> None:
        if isinstance(body, str):
            payload, content_type = body.encode("utf-8"), "text/plain; charset=utf-8"
        else:
            payload, content_type = json.dumps(body).encode("utf-8"), "application/json; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # keep test output quiet
