"""Signatures bound to the records they sign: what ``qms verify`` checks beyond the hash chain.

A signed record step (a CAPA's action plan, its closure, and every later procedure's signed steps)
signs the whole record as it was plus the data of the step, kept in the content store under the hash
the signature carries. Once approved, what was signed must still be what the record holds:

- the data of the signed step, for the latest approved request of that step on the record (a newer
  approved request of the same step supersedes an older one);
- for a step that ends the record (closure), everything the signature covered: every stage's data and
  the record's identity (title, owner, process, systems, source, severity, description), because
  nothing may change a closed record any more.

A difference names the signature, the record and the field.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..domain.capabilities import declare
from ..domain.refs import Ref
from ..store.tables import ApprovalRequestRow, RecordRow, SignatureRow
from . import contents

FINAL_STEPS = {"capa": "closed"}

# check(): what `qms verify` compares with the signed content of a CAPA step
CAPA_SIGNATURES_VERIFIED = declare(
    "capa.signatures_verified",
    "`qms verify` reports any later change to what a CAPA signature covered, naming the signature, the CAPA "
    "and the field: the data of the action plan once the plan is signed and, once the closure is signed, the "
    "data of every stage and the CAPA's title, owner, process, AI systems, source, severity and description.",
    proved_by=(
        "tests/integration/test_signed_content.py::test_an_edit_of_a_closed_capa_names_the_closure_signature_and_the_field",
    ),
    module=__name__,
)
IDENTITY = ("title", "owner", "process", "systems")
IDENTITY_DATA = ("source", "severity", "description")


def check(session: Session) -> tuple[int, list[str]]:
    """(signed record steps checked, problems)."""
    latest: dict[tuple[str, str, str], ApprovalRequestRow] = {}
    for request in session.scalars(
        select(ApprovalRequestRow)
        .where(ApprovalRequestRow.status == "approved")
        .order_by(ApprovalRequestRow.decided_at, ApprovalRequestRow.id)
    ):
        try:
            ref = Ref.parse(request.subject)
        except ValueError:
            continue
        if ref.kind in FINAL_STEPS and ref.version:
            latest[(ref.kind, ref.id, ref.version)] = request  # later decisions overwrite earlier ones
    problems: list[str] = []
    checked = 0
    for (kind, record_id, step), request in latest.items():
        stored = contents.load(session, request.content_sha256)
        if stored is None or not stored.is_record:
            continue  # a request from before qmsflow kept signed content: its hash is checked elsewhere
        record = session.get(RecordRow, record_id)
        signer = session.scalar(
            select(SignatureRow.printed_name)
            .where(SignatureRow.request_id == request.id, SignatureRow.decision == "approve")
            .order_by(SignatureRow.id.desc())
            .limit(1)
        )
        label = f"signature of {signer or '?'} on {request.id} ({request.meaning})"
        checked += 1
        if record is None:
            problems.append(f"{label}: the record {record_id} it signs is missing")
            continue
        signed = stored.data()
        stages = (record.data or {}).get("stages", {})
        fields = signed.get("fields", {})
        for key in sorted(fields):
            if key in ("signed_by", "approval"):
                continue
            if stages.get(step, {}).get(key) != fields[key]:
                problems.append(
                    _problem(label, record_id, f"data.stages.{step}.{key}", fields[key], stages.get(step, {}).get(key))
                )
        if record.status == step and FINAL_STEPS.get(kind) == step:
            before = signed.get("record", {})
            for key in IDENTITY:
                if before.get(key) != getattr(record, key):
                    problems.append(_problem(label, record_id, key, before.get(key), getattr(record, key)))
            data_before = before.get("data") or {}
            for key in IDENTITY_DATA:
                if data_before.get(key) != (record.data or {}).get(key):
                    problems.append(
                        _problem(label, record_id, f"data.{key}", data_before.get(key), record.data.get(key))
                    )
            expected = _after_step(kind, record_id, before, step, fields)
            for path, was, now in _diff(expected, {k: v for k, v in stages.items() if k != step}):
                problems.append(_problem(label, record_id, f"data.stages.{path}", was, now))
    return checked, problems


def _after_step(kind: str, record_id: str, before: dict[str, Any], step: str, fields: dict[str, Any]) -> dict:
    """The stages the record must hold once the signed step is applied to the signed state (the step's own
    data is compared separately): the domain's own transition, so legitimate effects are not differences."""
    from ..domain.capa import Capa

    data = before.get("data") or {}
    model = Capa(
        id=record_id,
        title=before.get("title") or "",
        source=data.get("source", "other"),
        owner=before.get("owner") or "",
        process=before.get("process") or "capa",
        severity=data.get("severity", "medium"),
        stage=before.get("status") or "opened",
        data=dict(data.get("stages", {})),
    )
    model.apply(step, dict(fields))
    return {k: v for k, v in model.data.items() if k != step}


def _problem(label: str, record_id: str, field: str, signed: Any, now: Any) -> str:
    return f"{label}: {record_id} {field} no longer holds what was signed (signed {_short(signed)}, now {_short(now)})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def _diff(signed: Any, now: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Paths where ``now`` differs from ``signed`` (keys of either side), leaves only."""
    if isinstance(signed, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(signed) | set(now)):
            out += _diff(signed.get(key), now.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if signed == now else [(path, signed, now)]
