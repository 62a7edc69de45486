"""Slack interactivity: button clicks and the comment modal, shared by HTTP and Socket Mode.

``parse`` turns a verified payload into an ``Interaction`` (or raises ``BadPayload``); ``handle``
does the work after Slack got its acknowledgement: map the Slack user to a person, sign or refuse
(recorded either way), resume the flow run, update the messages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..adapters import slack
from ..context import QmsContext
from ..domain import limits
from ..domain.approvals import AlreadyDecided, Decision, Method, NotAuthorized
from ..domain.errors import DomainError
from ..services import approvals, queries
from ..services.delivery import deliver
from ..services.signers import Credential
from ..store.uow import UnitOfWork

log = logging.getLogger("qmsflow.slack")
ACTIONS = {"approve": Decision.APPROVE, "reject": Decision.REJECT, "changes": Decision.CHANGES}
LINK_ACTIONS = frozenset({"open_signing_page"})  # a URL button: Slack opens the link and tells us; nothing to do


class BadPayload(ValueError):
    pass


@dataclass(frozen=True)
class Interaction:
    kind: str  # "click" | "submission" | "link"
    request_id: str
    decision: Decision | None
    slack_user: str
    trigger_id: str | None = None
    comment: str | None = None
    channel: str | None = None  # where the clicked message is, for an answer only the clicker sees


def parse(payload: Any) -> Interaction:
    """A verified payload as an ``Interaction``; ``BadPayload`` for anything else, whatever its shape."""
    if not isinstance(payload, dict):
        raise BadPayload("payload is not a JSON object")
    user = _text(_object(payload, "user").get("id"), limits.NAME)
    if not user:
        raise BadPayload("payload has no user.id")
    if payload.get("type") == "block_actions":
        actions = payload.get("actions")
        if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
            raise BadPayload("block_actions payload without actions")
        action = actions[0]
        action_id = _text(action.get("action_id"), limits.NAME)
        request_id = _text(action.get("value"), limits.RECORD_ID)
        if not request_id:
            raise BadPayload("action without a request id")
        if action_id in LINK_ACTIONS:
            return Interaction("link", request_id, None, user)
        decision = ACTIONS.get(action_id or "")
        if decision is None:
            raise BadPayload(f"unknown action {action_id!r}")
        return Interaction(
            "click",
            request_id,
            decision,
            user,
            trigger_id=_text(payload.get("trigger_id"), limits.NAME),
            channel=_channel_of(payload),
        )
    if payload.get("type") == "view_submission":
        view = _object(payload, "view")
        if view.get("callback_id") != "qms_decision":
            raise BadPayload("unknown view")
        try:
            request_id, raw = (_text(view.get("private_metadata"), limits.NAME) or "").split("|", 1)
            decision = Decision(raw)
            comment = view["state"]["values"]["comment"]["comment"]["value"]
        except (ValueError, KeyError, TypeError):
            raise BadPayload("malformed view_submission") from None
        if comment is not None and (
            not isinstance(comment, str) or limits.text_problem(comment, limits.COMMENT, multiline=True)
        ):
            raise BadPayload(f"the comment must be text of at most {limits.COMMENT:,} characters")
        if not request_id or len(request_id) > limits.RECORD_ID:
            raise BadPayload("malformed view_submission")
        return Interaction("submission", request_id, decision, user, comment=comment)
    raise BadPayload(f"unsupported payload type {_text(payload.get('type'), limits.NAME)!r}")


def _object(payload: dict, key: str) -> dict:
    value = payload.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadPayload(f"{key} must be a JSON object, got {type(value).__name__}")
    return value


def _text(value: Any, max_length: int) -> str | None:
    """A string field of the payload: None when absent, ``BadPayload`` when not a short plain string."""
    if value is None:
        return None
    if not isinstance(value, str) or limits.text_problem(value, max_length):
        raise BadPayload(f"expected a string of at most {max_length} characters, got {type(value).__name__}")
    return value


def _channel_of(payload: dict[str, Any]) -> str | None:
    """Where the clicked message is (Slack names it in ``container`` and ``channel``), if it says so."""
    for holder, key in ((payload.get("container"), "channel_id"), (payload.get("channel"), "id")):
        if isinstance(holder, dict):
            channel = _text(holder.get(key), limits.SLACK_ID)
            if channel:
                return channel
    return None


class SlackInteractions:
    def __init__(self, ctx: QmsContext):
        self.ctx = ctx
        settings = slack.settings(ctx.config)
        self.adapter = slack.SlackAdapter(slack.make_client(settings)) if settings else None
        self._by_slack_id: dict[str, str] = {}

    def person_for(self, slack_user: str) -> str | None:
        """Slack id in qms.yaml, else users.lookupByEmail of each person (cached)."""
        if slack_user in self._by_slack_id:
            return self._by_slack_id[slack_user]
        with self.ctx.db.read() as session:
            people = queries.active_people(session)
        for person in people:
            if person.slack_id == slack_user:
                self._by_slack_id[slack_user] = person.id
                return person.id
        if self.adapter is not None:
            for person in people:
                if person.slack_id:
                    continue
                try:
                    found = self.adapter.user_id(person.email)
                except Exception:  # noqa: BLE001 - not in this workspace
                    continue
                self._by_slack_id[found] = person.id
                if found == slack_user:
                    return person.id
        return None

    def handle(self, interaction: Interaction) -> None:
        """Work after the acknowledgement. Never raises: failures are logged and recorded."""
        try:
            self._handle(interaction)
        except Exception:  # noqa: BLE001
            log.exception("handling Slack interaction %s failed", interaction)

    def _handle(self, it: Interaction) -> None:
        if it.kind == "link":
            return  # the button opened the dashboard signing page; the signature happens there
        person = self.person_for(it.slack_user)
        if self.ctx.config.approvals.slack_signing == "reauth":
            self.refuse_without_reauth(it, person)
            return
        if it.kind == "click" and it.decision is not Decision.APPROVE:
            # a rejection or change request needs a comment: check the signer first, then ask for it
            try:
                with UnitOfWork(self.ctx.db, person or f"slack:{it.slack_user}") as uow:
                    approvals.check_signer(uow, self.ctx.config, it.request_id, Credential.slack(it.slack_user, person))
            except (NotAuthorized, AlreadyDecided):
                self.decide(it, person)  # records the refusal and tells the person
                return
            if self.adapter is not None and it.trigger_id:
                view = slack.render(
                    "comment_modal",
                    request_id=it.request_id,
                    decision=it.decision.value,
                    title="Reject" if it.decision is Decision.REJECT else "Request changes",
                    prompt="why? Your comment is part of the signed record.",
                )
                self.adapter.open_view(it.trigger_id, view)
            return
        self.decide(it, person)

    def decide(self, it: Interaction, person: str | None) -> None:
        try:
            with UnitOfWork(self.ctx.db, person or f"slack:{it.slack_user}") as uow:
                result = approvals.decide(
                    uow,
                    self.ctx.config,
                    it.request_id,
                    Credential.slack(it.slack_user, person),
                    it.decision,
                    it.comment,
                )
        except (NotAuthorized, AlreadyDecided) as refusal:
            log.info("refused Slack decision on %s by %s: %s", it.request_id, it.slack_user, refusal)
            self.answer(it, refusal.kind, f"Not recorded: {refusal}")
        except DomainError as problem:  # e.g. this process holds no signing key: nothing was signed
            log.error("Slack decision on %s by %s not recorded: %s", it.request_id, it.slack_user, problem)
            self.answer(it, "not-recorded", f"Not recorded: {problem}")
        else:
            approvals.after_decision(self.ctx, result)

    def refuse_without_reauth(self, it: Interaction, person: str | None) -> None:
        """``approvals.slack_signing: reauth``: a click does not sign; the dashboard does, with the password."""
        link = f"{self.ctx.config.web.base_url.rstrip('/')}/approvals/{it.request_id}"
        refusal = NotAuthorized(
            f"{it.request_id}: this QMS takes signatures in the dashboard with your password; sign at {link}",
            kind="reauth-required",
        )
        with UnitOfWork(self.ctx.db, person or f"slack:{it.slack_user}") as uow:
            approvals.record_refusal(
                uow, it.request_id, person, f"slack:{it.slack_user}", Method.SLACK, it.decision, refusal
            )
            uow.commit()
        self.answer(it, refusal.kind, f"Not signed: {refusal}")

    def answer(self, it: Interaction, kind: str, text: str) -> None:
        """Tell the clicker, once per request and reason, in a message only they see; then deliver it."""
        with UnitOfWork(self.ctx.db, "qmsflow") as uow:
            approvals.answer_in_slack(
                uow,
                self.ctx.config,
                it.slack_user,
                it.channel,
                f"slack:{it.request_id}:answer:{it.slack_user}:{kind}",
                text,
            )
            uow.commit()
        deliver(self.ctx.db, self.ctx.config)


def load_payload(body: bytes | str) -> Any:
    """The ``payload`` form field of an interactivity request, parsed; ``BadPayload`` otherwise."""
    from urllib.parse import parse_qs

    try:
        form = parse_qs(body.decode("utf-8") if isinstance(body, bytes) else body, strict_parsing=False)
        return limits.parse_json(form["payload"][0], "payload", depth=32)
    except (UnicodeDecodeError, KeyError, IndexError, limits.InvalidInput):
        raise BadPayload("expected a form field 'payload' holding JSON (UTF-8, nested at most 32 levels)") from None
