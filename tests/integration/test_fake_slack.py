"""The fake Slack Web API (tests/fakes/slack.py), driven through the real slack_sdk.WebClient.

The contract tests validate the fake's raw JSON bodies against Slack's published OpenAPI 2 spec
(shared/contracts/slack-web-api.openapi-v2.json, Swagger 2 = JSON Schema draft 4), so that the fake
cannot drift into answering something real Slack never would.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from fakes.slack import FakeSlack
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

SPEC_PATH = Path(__file__).resolve().parents[3] / "shared" / "contracts" / "slack-web-api.openapi-v2.json"
SPEC_URI = "urn:slack:web-api:openapi-v2"

USERS = [
    {"id": "U0ANA", "email": "ana@example.com", "name": "ana", "real_name": "Ana Alves"},
    {"id": "U0BEN1234", "email": "ben@example.com", "name": "ben", "real_name": "Ben Berg"},
]
CHANNEL = "C0QMSFLOW1"


# ---------------------------------------------------------------------- the spec


def _tuple_items_as_any_of(node: Any) -> Any:
    """The spec writes "one of these schemas" as tuple-form ``items`` without a ``type`` (objs_user,
    objs_conversation, conversations.open's ``channel``, objs_message's ``bot_id``, ``tz`` ...). Draft 4
    applies ``items`` to arrays only, so for an object or a string such a schema accepts anything. To
    check what it means, turn each of them into ``anyOf`` of its items (stricter than the spec as
    written, never looser)."""
    if isinstance(node, dict):
        node = {k: _tuple_items_as_any_of(v) for k, v in node.items()}
        if isinstance(node.get("items"), list) and "type" not in node:
            node["anyOf"] = node.pop("items")
        return node
    if isinstance(node, list):
        return [_tuple_items_as_any_of(v) for v in node]
    return node


def _patched_spec(spec: dict) -> dict:
    spec = _tuple_items_as_any_of(copy.deepcopy(spec))
    # Deviation 1: chat.update's success schema types message.blocks as "object", but Slack answers
    # an array of blocks there (as in every other message object, see objs_message ->
    # #/definitions/blocks). The fake answers like Slack; validate it against the array schema.
    update_message = spec["paths"]["/chat.update"]["post"]["responses"]["200"]["schema"]["properties"]["message"]
    update_message["properties"]["blocks"] = {"$ref": "#/definitions/blocks"}
    return spec


@lru_cache(maxsize=1)
def _load_spec() -> dict:
    return _patched_spec(json.loads(SPEC_PATH.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def spec() -> dict:
    if not SPEC_PATH.is_file():
        message = f"Slack OpenAPI spec not found at {SPEC_PATH}"
        if os.environ.get("CI"):
            pytest.fail(message + " — CI is set, so this is a failure, not a skip")
        pytest.skip(message)
    return _load_spec()


def _path_item(spec: dict, method: str) -> tuple[str, dict]:
    item = spec["paths"][f"/{method}"]
    verb = "post" if "post" in item else "get"
    return verb, item[verb]


def response_validator(spec: dict, method: str, response: str) -> Draft4Validator:
    """A draft 4 validator for paths./<method>.<verb>.responses.<response>.schema whose
    ``#/definitions/...`` refs resolve against the whole spec document."""
    verb, _ = _path_item(spec, method)
    registry = Registry().with_resource(SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT4))
    pointer = f"/paths/~1{method}/{verb}/responses/{response}/schema"
    return Draft4Validator({"$ref": f"{SPEC_URI}#{pointer}"}, registry=registry)


def assert_conforms(spec: dict, method: str, body: Any, *, allow_errors: tuple[str, ...] = ()) -> None:
    """Validates a raw body against "200" (ok true) or "default" (ok false) of the method's path.
    ``allow_errors``: error codes accepted although missing from the spec's enum (documented
    deviations only)."""
    assert isinstance(body, dict), body
    validator = response_validator(spec, method, "200" if body.get("ok") is True else "default")
    problems = [
        e
        for e in validator.iter_errors(body)
        if not (e.validator == "enum" and list(e.absolute_path) == ["error"] and e.instance in allow_errors)
    ]
    assert not problems, f"{method} body does not conform to the spec: {body}\n" + "\n".join(
        f"- at {list(e.absolute_path)}: {e.message}" for e in problems
    )


def test_validator_really_checks(spec: dict) -> None:
    """The validator itself: refs resolve, and it rejects what the spec forbids."""
    ok = {
        "ok": True,
        "channel": CHANNEL,
        "ts": "1764100000.000100",
        "message": {"type": "message", "text": "x", "ts": "1764100000.000100"},
    }
    assert_conforms(spec, "chat.postMessage", ok)
    for bad in (
        {**ok, "ts": "1764100000.1"},  # defs_ts pattern
        {**ok, "extra": 1},  # additionalProperties false
        {**ok, "message": {"text": "x", "ts": "1764100000.000100"}},  # objs_message requires type
        {**ok, "channel": "C1"},  # defs_channel pattern
    ):
        with pytest.raises(AssertionError):
            assert_conforms(spec, "chat.postMessage", bad)
    with pytest.raises(AssertionError):
        assert_conforms(spec, "chat.postMessage", {"ok": False, "error": "no_such_error"})
    with pytest.raises(AssertionError):  # objs_user's anyOf now bites: profile is required
        assert_conforms(spec, "users.lookupByEmail", {"ok": True, "user": {"id": "U0ANA", "name": "ana"}})


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeSlack]:
    with FakeSlack(users=USERS) as fake:
        yield fake


SERVED_METHODS = (
    "chat.postMessage",
    "chat.postEphemeral",
    "chat.update",
    "views.open",
    "users.lookupByEmail",
    "conversations.open",
    "auth.test",
)
# Error codes the fake answers that the 2020 spec's enums predate (see tests/fakes/slack.py).
KNOWN_DEVIATING_ERRORS = ("ratelimited", "invalid_blocks_format", "invalid_blocks")


@pytest.fixture
def fake(fake_server: FakeSlack) -> Iterator[FakeSlack]:
    """The shared server, reset; afterwards every JSON body it answered in the test must conform."""
    fake_server.reset()
    yield fake_server
    calls = list(fake_server.calls)
    fake_server.reset()
    if SPEC_PATH.is_file():
        spec = _load_spec()
        for call in calls:
            if isinstance(call.response, dict) and call.method in SERVED_METHODS:
                assert_conforms(spec, call.method, call.response, allow_errors=KNOWN_DEVIATING_ERRORS)


@pytest.fixture
def client(fake: FakeSlack) -> WebClient:
    return WebClient(token=fake.token, base_url=fake.base_url, timeout=10)


def _error_body(call: Any) -> tuple[dict, int]:
    with pytest.raises(SlackApiError) as info:
        call()
    return info.value.response.data, info.value.response.status_code


# ---------------------------------------------------------------------- 1. contract


def test_base_url_and_lifecycle() -> None:
    fake = FakeSlack()
    with pytest.raises(RuntimeError):
        _ = fake.base_url
    with fake:
        assert fake.base_url.startswith("http://127.0.0.1:")
        assert fake.base_url.endswith("/api/")
        assert WebClient(token="xoxb-test", base_url=fake.base_url).auth_test()["ok"] is True
    with pytest.raises(RuntimeError):
        _ = fake.base_url


def test_rejects_users_with_ids_slack_would_never_issue() -> None:
    with pytest.raises(ValueError):
        FakeSlack(users=[{"id": "ana", "email": "ana@example.com"}])


def test_contract_chat_post_message(spec: dict, fake: FakeSlack, client: WebClient) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*CAPA-7* needs approval"}}]
    resp = client.chat_postMessage(channel=CHANNEL, text="CAPA-7 needs approval", blocks=blocks)
    assert_conforms(spec, "chat.postMessage", resp.data)
    assert resp["channel"] == CHANNEL
    assert resp["message"]["blocks"] == blocks

    dm = client.chat_postMessage(channel="U0ANA", text="to Ana")
    assert_conforms(spec, "chat.postMessage", dm.data)
    assert dm["channel"] == fake.dm_channel_for("U0ANA") == "D0ANA0000"
    assert client.chat_postMessage(channel="U0BEN1234", text="to Ben")["channel"] == "D0BEN1234"

    named = client.chat_postMessage(channel="#qms", text="by name")
    assert_conforms(spec, "chat.postMessage", named.data)

    with pytest.warns(UserWarning, match="text"):  # slack_sdk warns about the missing text, then sends
        body, status = _error_body(lambda: client.chat_postMessage(channel=CHANNEL, text=""))
    assert (status, body) == (200, {"ok": False, "error": "no_text"})
    assert_conforms(spec, "chat.postMessage", body)
    body, _ = _error_body(lambda: client.chat_postMessage(channel="U0NOBODY", text="x"))
    assert body["error"] == "channel_not_found"
    assert_conforms(spec, "chat.postMessage", body)


def test_timestamps_are_unique_and_increasing(fake: FakeSlack, client: WebClient) -> None:
    stamps = [client.chat_postMessage(channel=CHANNEL, text=str(i))["ts"] for i in range(5)]
    assert stamps == sorted(stamps, key=float)
    assert len(set(stamps)) == 5
    assert all(len(ts) == 17 and ts[10] == "." for ts in stamps)


def test_contract_chat_update(spec: dict, fake: FakeSlack, client: WebClient) -> None:
    posted = client.chat_postMessage(channel=CHANNEL, text="pending")
    resp = client.chat_update(
        channel=posted["channel"],
        ts=posted["ts"],
        text="approved",
        blocks=[{"type": "section", "text": {"type": "plain_text", "text": "approved"}}],
    )
    assert_conforms(spec, "chat.update", resp.data)
    assert (resp["channel"], resp["ts"], resp["text"]) == (CHANNEL, posted["ts"], "approved")

    body, status = _error_body(lambda: client.chat_update(channel=CHANNEL, ts="1700000000.000001", text="x"))
    assert (status, body) == (200, {"ok": False, "error": "message_not_found"})
    assert_conforms(spec, "chat.update", body)


def test_contract_views_open(spec: dict, fake: FakeSlack, client: WebClient) -> None:
    view = {
        "type": "modal",
        "callback_id": "approve",
        "title": {"type": "plain_text", "text": "Approve"},
        "blocks": [
            {
                "type": "input",
                "block_id": "why",
                "label": {"type": "plain_text", "text": "Why"},
                "element": {"type": "plain_text_input", "action_id": "why"},
            }
        ],
    }
    resp = client.views_open(trigger_id="1337.42.abcdef", view=view)
    assert_conforms(spec, "views.open", resp.data)
    assert resp["view"]["id"].startswith("V")
    assert resp["view"]["callback_id"] == "approve"
    assert fake.views == [{**view, "trigger_id": "1337.42.abcdef", "id": resp["view"]["id"]}]

    body, status = _error_body(lambda: client.api_call("views.open", json={"view": view}))
    assert (status, body) == (200, {"ok": False, "error": "invalid_arguments"})
    assert_conforms(spec, "views.open", body)


def test_contract_users_lookup_by_email(spec: dict, fake: FakeSlack, client: WebClient) -> None:
    resp = client.users_lookupByEmail(email="ana@example.com")
    assert_conforms(spec, "users.lookupByEmail", resp.data)

    body, status = _error_body(lambda: client.users_lookupByEmail(email="nobody@example.com"))
    assert (status, body) == (200, {"ok": False, "error": "users_not_found"})
    assert_conforms(spec, "users.lookupByEmail", body)


def test_contract_conversations_open(spec: dict, fake: FakeSlack, client: WebClient) -> None:
    resp = client.conversations_open(users="U0ANA")
    assert_conforms(spec, "conversations.open", resp.data)
    assert resp.data == {"ok": True, "channel": {"id": "D0ANA0000"}}
    again = client.conversations_open(users=["U0ANA"])
    assert_conforms(spec, "conversations.open", again.data)
    assert again["already_open"] is True and again["channel"]["id"] == "D0ANA0000"
    group = client.conversations_open(users=["U0ANA", "U0BEN1234"])
    assert_conforms(spec, "conversations.open", group.data)
    assert group["channel"]["id"].startswith("G")

    body, status = _error_body(lambda: client.api_call("conversations.open", params={}))
    assert (status, body) == (200, {"ok": False, "error": "users_list_not_supplied"})
    assert_conforms(spec, "conversations.open", body)
    body, _ = _error_body(lambda: client.conversations_open(users="U0NOBODY"))
    assert body["error"] == "user_not_found"
    assert_conforms(spec, "conversations.open", body)


def test_contract_auth(spec: dict, fake: FakeSlack, client: WebClient) -> None:
    resp = client.auth_test()
    assert_conforms(spec, "auth.test", resp.data)
    assert resp["user_id"] == fake.bot_user_id

    wrong = WebClient(token="xoxb-wrong", base_url=fake.base_url)
    for method, call in (
        ("auth.test", wrong.auth_test),
        ("chat.postMessage", lambda: wrong.chat_postMessage(channel=CHANNEL, text="x")),
        ("users.lookupByEmail", lambda: wrong.users_lookupByEmail(email="ana@example.com")),
    ):
        body, status = _error_body(call)
        assert (status, body) == (200, {"ok": False, "error": "invalid_auth"})
        assert_conforms(spec, method, body)
    assert fake.calls_to("auth.test")[-1].headers["authorization"] == "Bearer xoxb-wrong"

    body, _ = _error_body(lambda: WebClient(base_url=fake.base_url).auth_test())  # no token at all
    assert body == {"ok": False, "error": "not_authed"}
    assert_conforms(spec, "auth.test", body)


def test_unknown_method(fake: FakeSlack, client: WebClient) -> None:
    body, status = _error_body(lambda: client.api_call("reminders.add", params={"text": "x"}))
    assert (status, body) == (200, {"ok": False, "error": "unknown_method"})


# ---------------------------------------------------------------------- 2. injections


def test_fail_next(spec: dict, fake: FakeSlack, client: WebClient) -> None:
    fake.fail_next("chat.postMessage", "channel_not_found", times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as info:
            client.chat_postMessage(channel=CHANNEL, text="x")
        assert info.value.response["error"] == "channel_not_found"
        assert info.value.response.status_code == 200
        assert_conforms(spec, "chat.postMessage", info.value.response.data)
    assert client.chat_postMessage(channel=CHANNEL, text="x")["ok"] is True
    assert client.auth_test()["ok"] is True  # other methods untouched
    assert len(fake.calls_to("chat.postMessage")) == 3


def test_rate_limit_plain_client_raises_429(spec: dict, fake: FakeSlack, client: WebClient) -> None:
    fake.rate_limit_next("chat.postMessage", retry_after=1)
    with pytest.raises(SlackApiError) as info:
        client.chat_postMessage(channel=CHANNEL, text="x")
    response = info.value.response
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    assert response.data == {"ok": False, "error": "ratelimited"}
    # Deviation 2: Slack answers 429 with error "ratelimited", which is in none of the spec's error
    # enums (chat.postMessage lists "rate_limited", a different, older code). Everything else checked.
    assert_conforms(spec, "chat.postMessage", response.data, allow_errors=("ratelimited",))
    assert client.chat_postMessage(channel=CHANNEL, text="x")["ok"] is True


def test_rate_limit_retry_handler_waits_and_succeeds(fake: FakeSlack, client: WebClient) -> None:
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=2))
    fake.rate_limit_next("chat.postMessage", retry_after=1)
    started = time.monotonic()
    resp = client.chat_postMessage(channel=CHANNEL, text="after the wait")
    elapsed = time.monotonic() - started
    assert resp["ok"] is True
    assert elapsed >= 1.0  # it honoured Retry-After
    assert [c.status for c in fake.calls_to("chat.postMessage")] == [429, 200]
    assert fake.messages[(CHANNEL, resp["ts"])]["text"] == "after the wait"


def test_injections_are_consumed_in_order(fake: FakeSlack, client: WebClient) -> None:
    fake.fail_next("auth.test", "account_inactive")
    fake.rate_limit_next("auth.test", retry_after=1)
    assert _error_body(client.auth_test) == ({"ok": False, "error": "account_inactive"}, 200)
    assert _error_body(client.auth_test)[1] == 429
    assert client.auth_test()["ok"] is True


def test_go_down_and_come_up(fake: FakeSlack, client: WebClient) -> None:
    fake.go_down()
    for call in (client.auth_test, lambda: client.chat_postMessage(channel=CHANNEL, text="x")):
        with pytest.raises(SlackApiError) as info:
            call()
        assert info.value.response.status_code == 503
    assert [c.status for c in fake.calls] == [503, 503]
    assert fake.messages == {}
    fake.come_up()
    assert client.chat_postMessage(channel=CHANNEL, text="x")["ok"] is True


def test_reset_forgets_everything(fake: FakeSlack, client: WebClient) -> None:
    calls = fake.calls
    client.chat_postMessage(channel=CHANNEL, text="x")
    client.views_open(trigger_id="t", view={"type": "modal", "blocks": []})
    fake.fail_next("auth.test", "invalid_auth")
    fake.go_down()
    fake.reset()
    assert (fake.calls, fake.messages, fake.views) == ([], {}, [])
    assert client.auth_test()["ok"] is True
    assert calls is fake.calls and len(calls) == 1


# ---------------------------------------------------------------------- 3. behaviour


def test_chat_update_changes_the_stored_message(fake: FakeSlack, client: WebClient) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "pending"}}]
    posted = client.chat_postMessage(channel=CHANNEL, text="pending", blocks=blocks)
    key = (CHANNEL, posted["ts"])
    assert fake.messages[key]["text"] == "pending"
    assert fake.messages[key]["blocks"] == blocks
    assert fake.messages[key]["user"] == fake.bot_user_id

    new_blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "approved by Ana"}}]
    client.chat_update(channel=CHANNEL, ts=posted["ts"], text="approved", blocks=new_blocks)
    assert fake.messages[key]["text"] == "approved"
    assert fake.messages[key]["blocks"] == new_blocks
    assert fake.messages[key]["ts"] == posted["ts"]
    assert len(fake.messages) == 1

    client.chat_update(channel=CHANNEL, ts=posted["ts"], text="text only")  # omitted blocks are kept
    assert fake.messages[key]["blocks"] == new_blocks


def test_dm_by_user_id_then_update_by_dm_channel(fake: FakeSlack, client: WebClient) -> None:
    posted = client.chat_postMessage(channel="U0ANA", text="please review")
    client.chat_update(channel=posted["channel"], ts=posted["ts"], text="reviewed")
    assert fake.messages[("D0ANA0000", posted["ts"])]["text"] == "reviewed"


def test_form_encoded_bodies_with_json_strings(fake: FakeSlack, client: WebClient) -> None:
    blocks = [{"type": "divider"}]
    form = {"channel": CHANNEL, "text": "form", "blocks": json.dumps(blocks)}
    resp = client.api_call("chat.postMessage", params=form)
    call = fake.calls_to("chat.postMessage")[-1]
    assert call.headers["content-type"] == "application/x-www-form-urlencoded"
    assert call.params["blocks"] == blocks
    assert fake.messages[(CHANNEL, resp["ts"])]["blocks"] == blocks

    view = {"type": "modal", "title": {"type": "plain_text", "text": "T"}, "blocks": []}
    client.api_call("views.open", params={"trigger_id": "t1", "view": json.dumps(view)})
    assert fake.views[-1]["title"] == view["title"]

    body, _ = _error_body(lambda: client.api_call("chat.postMessage", params={"channel": CHANNEL, "blocks": "[nope"}))
    assert body["error"] == "invalid_blocks_format"


def test_json_bodies_are_recorded(fake: FakeSlack, client: WebClient) -> None:
    client.chat_postMessage(channel=CHANNEL, text="json", blocks=[{"type": "divider"}], thread_ts="1764100000.000100")
    call = fake.calls_to("chat.postMessage")[-1]
    assert call.headers["content-type"].startswith("application/json")
    assert call.params == {
        "channel": CHANNEL,
        "text": "json",
        "blocks": [{"type": "divider"}],
        "thread_ts": "1764100000.000100",
    }
    assert call.response["message"]["thread_ts"] == "1764100000.000100"


def test_users_lookup_by_email_finds_and_misses(fake: FakeSlack, client: WebClient) -> None:
    user = client.users_lookupByEmail(email="ana@example.com")["user"]
    assert (user["id"], user["name"], user["real_name"]) == ("U0ANA", "ana", "Ana Alves")
    assert user["profile"]["email"] == "ana@example.com"
    assert client.users_lookupByEmail(email="Ben@Example.com")["user"]["id"] == "U0BEN1234"
    with pytest.raises(SlackApiError) as info:
        client.users_lookupByEmail(email="carla@example.com")
    assert info.value.response["error"] == "users_not_found"
    assert [c.params["email"] for c in fake.calls_to("users.lookupByEmail")] == [
        "ana@example.com",
        "Ben@Example.com",
        "carla@example.com",
    ]


def test_ephemeral_message_to_one_user_in_a_channel(fake: FakeSlack, client: WebClient) -> None:
    sent = client.chat_postEphemeral(channel=CHANNEL, user=USERS[0]["id"], text="only you see this")
    assert sent["ok"] is True and sent["message_ts"]
    assert fake.ephemerals[-1]["user"] == USERS[0]["id"] and fake.ephemerals[-1]["text"] == "only you see this"
    body, status = _error_body(lambda: client.chat_postEphemeral(channel=CHANNEL, user="U0NOBODY1", text="x"))
    assert status == 200 and body["error"] == "user_not_in_channel"
