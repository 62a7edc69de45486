"""`qms demo --scale large`: ten years of a 50-system organisation, for load tests and benchmarks.

About 10,000 document versions, 100,000 CAPAs, 1,000,000 trail events, written in chronological
order through the real trail writer and unit of work: every event holds its row's full state and
every row is inserted (in bulk) with its last event, so `qms verify` checks every record table of it.
Deterministic: the same seed gives the same organisation.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from ruamel.yaml import YAML
from sqlalchemy import select

from ..domain.approvals import Decision, Method, Proof, Signature
from ..domain.capa import STAGES
from ..domain.documents import add_months
from ..domain.organisation import ANNEX_III_AREAS
from ..domain.trail import Canonical, canonical_json
from ..services.sealing import NoSigningKey, trail_keys
from ..services.sync import sync_config
from ..store.db import Database
from ..store.state import BY_MODEL
from ..store.tables import (
    ApprovalRequestRow,
    DocumentVersionRow,
    IdCounterRow,
    RecordRow,
    SignatureRow,
)
from ..store.uow import UnitOfWork

SYSTEM_DOCS = (
    ("TD", "Technical documentation (Annex IV)"),
    ("RMF", "Risk management file (Art. 9)"),
    ("PMMP", "Post-market monitoring plan (Art. 72)"),
    ("IFU", "Instructions for use (Art. 13)"),
    ("DATA", "Data governance sheet (Art. 10)"),
    ("DOC", "EU declaration of conformity (Art. 47)"),
)
FIRST = (
    "Ana",
    "Ben",
    "Chloe",
    "Dev",
    "Eva",
    "Finn",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Kira",
    "Lars",
    "Mia",
    "Nils",
    "Olga",
    "Paul",
    "Quinn",
    "Rosa",
    "Sven",
    "Tara",
    "Udo",
    "Vera",
    "Wim",
    "Xena",
    "Yusuf",
    "Zoe",
)
LAST = ("Alves", "Brandt", "Chen", "Patel", "Novak", "Weber", "Rossi", "Dubois", "Kowalski", "Jensen")


def write_config(root: Path, systems: int = 50, people: int = 40, seed: int = 7) -> int:
    """Write qms.yaml and the document files of the large organisation; returns the document count."""
    from ..scaffold import environment, render_document
    from ..settings import parse_config

    rng = random.Random(seed)
    yaml = YAML()
    base = yaml.load(
        environment().get_template("scaffold/qms.yaml.j2").render(org_name="Large Demo AI SE", trusted_single_user=True)
    )
    staff = []
    for i in range(people):
        first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST) + i) % len(LAST)]
        pid = ["ana", "ben", "chloe", "dev"][i] if i < 4 else f"{first.lower()}{i}"
        person = {
            "id": pid,
            "name": f"{first} {last}",
            "email": f"{pid}@example.com",
            "roles": ["approver"] if i % 3 == 0 else ["engineer"],
        }
        if i == 0:
            person["roles"] = ["quality-lead", "approver"]
        if i == 1:
            person["roles"] = ["management", "approver"]
        if i > 1:
            person["manager"] = "ben" if i < 10 else staff[i % 10]["id"] if i % 10 > 1 else "ben"
        staff.append(person)
    base["people"] = staff
    start = date(2016, 1, 1)
    base["systems"] = [
        {
            "id": f"sys{n:02d}",
            "name": f"System {n:02d}",
            "intended_purpose": f"High-risk use case number {n}.",
            "risk_class": "high-risk",
            "annex_iii_area": ANNEX_III_AREAS[n % len(ANNEX_III_AREAS)],
            "placed_on_market": start + timedelta(days=rng.randrange(0, 3000)),
        }
        for n in range(1, systems + 1)
    ]
    approvers = [p["id"] for p in staff if "approver" in p["roles"]]
    docs = list(base["documents"])
    for system in base["systems"]:
        for code, title in SYSTEM_DOCS:
            owner = rng.choice(staff)["id"]
            docs.append(
                {
                    "id": f"{code}-{system['id'].upper()}",
                    "title": f"{title} — {system['name']}",
                    "path": f"systems/{system['id']}/{code.lower()}.md",
                    "owner": owner,
                    "approvers": [a for a in rng.sample(approvers, 2) if a != owner] or ["ana"],
                    "systems": [system["id"]],
                }
            )
    base["documents"] = docs
    root.mkdir(parents=True, exist_ok=True)
    with (root / "qms.yaml").open("w") as handle:
        yaml.dump(base, handle)
    config = parse_config((root / "qms.yaml").read_text(), root / "qms.yaml").config
    for doc in config.documents:
        path = root / doc.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if doc.id in {"QMS-001"} or doc.id.startswith("SOP-"):
            path.write_text(render_document(config, doc.id))
        else:
            path.write_text(f"# {doc.id} {doc.title}\n\nOwner: {doc.owner}. Maintained under SOP-DOC-001.\n")
    return len(docs)


def fill(
    db: Database,
    config,
    root: Path,
    progress: Callable[[str, int, int], None] | None = None,  # noqa: ANN001
    capas: int = 100_000,
    target_events: int = 1_000_000,
    seed: int = 7,
    today: date | None = None,
    batch_events: int = 20_000,
) -> dict:
    """Fill the store: document versions with approvals and signatures, CAPAs through their stages.

    Every event is a real state event (the row's full state, as the services write it), and every
    row is inserted in the unit of work of its last event, so ``qms verify`` checks every record
    table of the large store against the trail, as it would a real one.
    """
    rng = random.Random(seed)
    today = today or datetime.now(UTC).date()
    t0 = datetime.combine(today - timedelta(days=3650), datetime.min.time(), UTC)
    span = (datetime.combine(today, datetime.min.time(), UTC) - t0).total_seconds()
    say = progress or (lambda *_: None)

    with UnitOfWork(db, "demo-seed") as uow:
        synced = sync_config(uow, config, root, register_drafts=False)
        uow.commit()
    people = [p.id for p in config.people]

    # plan every event in time order: (when, kind, payload)
    plan: list[tuple[float, int, tuple]] = []
    version_count = 0
    for doc in config.documents:
        versions = rng.randint(25, 38)
        for v in range(versions):
            when = (v + rng.random()) / versions * span
            plan.append((when, 0, (doc.id, v, doc.owner, tuple(config.approvers_of(doc)))))
            version_count += 1
    for n in range(capas):
        opened = rng.random() * span
        plan.append((opened, 1, (n,)))
    plan.sort(key=lambda item: item[0])

    events_per_capa = max(1, -(-(target_events - version_count * 6) // max(capas, 1)))  # round up
    counters: dict[str, dict[int, int]] = {"CAPA": {}, "APR": {}}
    batch = _Batch()
    effective: dict[str, dict] = {}  # document id -> its effective version's row (to make obsolete)
    written = len(synced.changes)  # one event each
    if db.sealer is None:
        raise NoSigningKey("the large demo seals its signatures: open the store through its compliance repo")
    uow = UnitOfWork(db, "demo-seed").__enter__()
    try:
        new_key = db.sealer.key().id not in trail_keys(uow.session)
        batch.seal = db.sealer.seal_for(uow)  # registers the key with the first batch: one event
        batch.events += int(new_key)
        for offset, kind, payload in plan:
            when = t0 + timedelta(seconds=offset)
            if kind == 0:
                batch.events += _version(uow, rng, batch, effective, counters, when, *payload)
            else:
                batch.events += _capa(uow, rng, batch, counters, when, today, people, events_per_capa)
            if batch.events >= batch_events:  # one unit of work per batch
                written += batch.flush(uow)
                say("events", written, max(target_events, written))  # the estimate may fall short
        written += batch.flush(uow)
        for prefix, per_year in counters.items():
            for year, last in per_year.items():
                uow.session.merge(IdCounterRow(prefix=prefix, year=year, last=last))
        uow.commit()
        say("events", written, written)  # done: the bar ends full
    finally:
        uow.__exit__(None, None, None)
    return {"documents": len(config.documents), "document_versions": version_count, "capas": capas, "events": written}


class _Batch:
    """Rows whose last event is in the current unit of work, inserted with it (one Core insert per table)."""

    def __init__(self) -> None:
        self.rows: dict[type, list[dict]] = {RecordRow: [], DocumentVersionRow: [], ApprovalRequestRow: []}
        self.signatures: list[dict] = []
        self.seal: Callable[[bytes], dict] | None = None  # the store's signing key (ADR 0018)
        self.pending: set[int] = set()  # id() of the version rows not inserted yet
        self.events = 0

    def flush(self, uow: UnitOfWork) -> int:
        for model, rows in self.rows.items():
            uow.insert_rows(model, rows)
            rows.clear()
        self.pending.clear()
        uow.session.flush()  # versions made obsolete through the ORM
        uow.insert_rows(SignatureRow, self.signatures)
        self.signatures.clear()
        uow.commit()
        done, self.events = self.events, 0
        return done


def _state(model: type, values: dict) -> Canonical:
    """The row's state, serialised once (an event's after is often the next one's before)."""
    return Canonical(canonical_json(BY_MODEL[model].state(values.get)))


def _next_id(counters: dict, prefix: str, year: int) -> str:
    counters[prefix][year] = counters[prefix].get(year, 0) + 1
    return f"{prefix}-{year}-{counters[prefix][year]:05d}"


def _version(uow, rng, batch, effective, counters, when, doc_id, v, owner, approvers) -> int:  # noqa: ANN001, PLR0913
    """A version submitted, approved and made effective; the one before it made obsolete. Six events."""
    version = f"{v + 1}.0"
    sha = f"{rng.getrandbits(256):064x}"
    request_id = _next_id(counters, "APR", when.year)
    signer = approvers[0] if approvers else None
    decided = when + timedelta(days=rng.expovariate(1 / 4))
    ref = f"document-version:{doc_id}@{version}"
    row = {
        "document_id": doc_id,
        "version": version,
        "status": "in-review",
        "path": "-",
        "content_sha256": sha,
        "git_commit": None,
        "effective_date": None,
        "next_review_date": None,
        "comment": None,
        "created_at": when,
    }
    uow.record("document-version.snapshot", ref, None, _state(DocumentVersionRow, row), actor=owner, at=when)
    request = {
        "id": request_id,
        "key": f"demo:{request_id}",
        "subject": ref,
        "title": f"{doc_id} v{version}",
        "content_sha256": sha,
        "approvers": [a.id for a in approvers],
        "required": 1,
        "meaning": f"approve {doc_id} v{version} for use",
        "what": f"{doc_id} v{version}",
        "author": owner,
        "authors": [owner],
        "due_date": (when + timedelta(days=14)).date(),
        "status": "pending",
        "flow_run_id": None,
        "data": {"document_id": doc_id, "version": version},
        "created_at": when,
        "decided_at": None,
        "process": "document-control",
    }
    pending = _state(ApprovalRequestRow, request)
    uow.record("approval.requested", f"approval:{request_id}", None, pending, actor=owner, at=when)
    events = 2
    if signer is not None:
        method = rng.choice([Method.WEB, Method.SLACK, Method.CLI])
        sig = Signature(
            signer=signer.id,
            printed_name=signer.name,
            at=decided,
            meaning=request["meaning"],
            decision=Decision.APPROVE,
            method=method,
            content_sha256=sha,
            account=signer.id,  # demo people sign with the account named like them
            auth={Method.WEB: "password", Method.SLACK: f"slack:U{signer.id.upper()}"}.get(method, "token:demo"),
        )
        event = uow.record(
            "approval.signed", f"approval:{request_id}", None, sig.state(), actor=signer.id, at=when, seal=batch.seal
        )
        proof = Proof.model_validate(event.after["proof"])
        batch.signatures.append(
            {**sig.model_dump(), "proof": proof.model_dump(), "request_id": request_id, "trail_seq": event.seq}
        )
        request.update(status="approved", decided_at=decided)
        uow.record(
            "approval.decided",
            f"approval:{request_id}",
            pending,
            _state(ApprovalRequestRow, request),
            actor=signer.id,
            at=when,
        )
        events += 2
    batch.rows[ApprovalRequestRow].append(request)
    previous = effective.get(doc_id)
    if previous is not None:
        events += _make_obsolete(uow, batch, previous, version, when)
    before = _state(DocumentVersionRow, row)
    row.update(status="effective", effective_date=decided.date(), next_review_date=add_months(decided.date(), 12))
    uow.record("document-version.effective", ref, before, _state(DocumentVersionRow, row), actor="qmsflow", at=when)
    batch.rows[DocumentVersionRow].append(row)
    batch.pending.add(id(row))
    effective[doc_id] = row
    return events + 1  # effective


def _make_obsolete(uow, batch, previous: dict, version: str, when: datetime) -> int:  # noqa: ANN001
    ref = f"document-version:{previous['document_id']}@{previous['version']}"
    before = _state(DocumentVersionRow, previous)
    changes = {"status": "obsolete", "comment": f"superseded by v{version}"}
    if id(previous) in batch.pending:  # not inserted yet: insert it obsolete
        previous.update(changes)
    else:
        stored = uow.session.scalar(
            select(DocumentVersionRow).where(
                DocumentVersionRow.document_id == previous["document_id"],
                DocumentVersionRow.version == previous["version"],
            )
        )
        for key, value in changes.items():
            setattr(stored, key, value)
        previous.update(changes)
    uow.record("document-version.obsolete", ref, before, _state(DocumentVersionRow, previous), actor="qmsflow", at=when)
    return 1


def _capa(uow, rng, batch, counters, when, today, people, events_per_capa) -> int:  # noqa: ANN001, PLR0913
    """A CAPA opened and taken through its stages (each change a full-state event), as old as the plan says."""
    capa_id = _next_id(counters, "CAPA", when.year)
    age_days = (today - when.date()).days
    stage_index = min(len(STAGES) - 1, int(age_days / rng.uniform(20, 60)))
    if age_days > 400 and rng.random() < 0.97:
        stage_index = len(STAGES) - 1
    owner = rng.choice(people)
    row = {
        "id": capa_id,
        "kind": "capa",
        "key": None,
        "title": f"Nonconformity {capa_id}: {rng.choice(TOPICS)}",
        "status": "opened",
        "owner": owner,
        "process": "capa",
        "due_date": when.date() + timedelta(days=30),
        "systems": [f"sys{rng.randint(1, 50):02d}"],
        "data": {
            "source": rng.choice(["complaint", "incident", "audit", "release", "pms", "other"]),
            "severity": rng.choice(["low", "medium", "high"]),
            "description": "",
            "stages": {},
            "stage_since": when.date().isoformat(),
        },
        "links": [],
        "created_at": when,
        "updated_at": when,
    }
    ref = f"record:{capa_id}"
    state = _state(RecordRow, row)
    uow.record("capa.created", ref, None, state, actor=owner, at=when)
    end = min(
        when + timedelta(days=30 * stage_index + rng.random() * 20), datetime.combine(today, datetime.min.time(), UTC)
    )
    steps = events_per_capa - 1
    for step in range(1, events_per_capa):
        moment = when + (end - when) * step / steps
        stage = STAGES[min(step, stage_index)]
        data = dict(row["data"])
        if stage != row["status"]:
            data["stages"] = {**data["stages"], stage: {"note": f"{stage} recorded", "on": moment.date().isoformat()}}
            data["stage_since"] = moment.date().isoformat()
            action = "capa.advanced"
            due = None if stage == "closed" else moment.date() + timedelta(days=30)
        else:
            data["comments"] = [*data.get("comments", []), f"update {step}"]
            action = "capa.updated"
            due = row["due_date"]
        row.update(status=stage, data=data, due_date=due, updated_at=moment)
        before, state = state, _state(RecordRow, row)
        uow.record(action, ref, before, state, actor=owner, at=when)
    batch.rows[RecordRow].append(row)
    return events_per_capa


TOPICS = ("data drift", "label error", "missed test", "late review", "incident")
