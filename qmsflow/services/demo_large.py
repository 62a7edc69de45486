"""`qms demo --scale large`: ten years of a 50-system organisation, for load tests and benchmarks.

About 10,000 document versions, 100,000 CAPAs, 1,000,000 trail events, written in chronological
order through the real trail writer (so `qms verify` passes), with bulk inserts for the records.
Deterministic: the same seed gives the same organisation.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from ruamel.yaml import YAML
from sqlalchemy import insert

from ..domain.approvals import Decision, Method, Signature
from ..domain.capa import STAGES
from ..domain.documents import add_months
from ..domain.organisation import ANNEX_III_AREAS
from ..store.db import Database
from ..store.tables import (
    ApprovalRequestRow,
    DocumentVersionRow,
    IdCounterRow,
    RecordRow,
    SignatureRow,
)
from ..store.uow import UnitOfWork
from .sync import sync_config

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
    from ..settings import parse_config
    from .scaffold import environment, render_document

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
) -> dict:
    """Fill the store: document versions with approvals and signatures, CAPAs through their stages."""
    rng = random.Random(seed)
    today = today or datetime.now(UTC).date()
    t0 = datetime.combine(today - timedelta(days=3650), datetime.min.time(), UTC)
    span = (datetime.combine(today, datetime.min.time(), UTC) - t0).total_seconds()
    say = progress or (lambda *_: None)

    with UnitOfWork(db, "demo-seed") as uow:
        sync_config(uow, config, root, register_drafts=False)
        uow.commit()
    people = [p.id for p in config.people]

    # plan every event in time order: (when, kind, payload)
    plan: list[tuple[float, int, tuple]] = []
    version_count = 0
    for doc in config.documents:
        versions = rng.randint(25, 38)
        for v in range(versions):
            when = (v + rng.random()) / versions * span
            last = v == versions - 1  # the newest version is effective, every older one obsolete
            plan.append((when, 0, (doc.id, v, doc.owner, tuple(config.approvers_of(doc)), last)))
            version_count += 1
    for n in range(capas):
        opened = rng.random() * span
        plan.append((opened, 1, (n,)))
    plan.sort(key=lambda item: item[0])

    events_per_capa = max(1, -(-(target_events - version_count * 4) // max(capas, 1)))  # round up
    counters = {"CAPA": {}, "APR": {}}
    capa_rows, version_rows, request_rows, signature_rows = [], [], [], []
    written = 0
    batch_events = 0
    uow = UnitOfWork(db, "demo-seed").__enter__()
    try:
        for index, (offset, kind, payload) in enumerate(plan):
            when = t0 + timedelta(seconds=offset)
            year = when.year
            if kind == 0:
                doc_id, v, owner, approvers, last = payload
                version = f"{v + 1}.0"
                sha = f"{rng.getrandbits(256):064x}"
                counters["APR"][year] = counters["APR"].get(year, 0) + 1
                request_id = f"APR-{year}-{counters['APR'][year]:05d}"
                signer = approvers[0] if approvers else None
                decided = when + timedelta(days=rng.expovariate(1 / 4))
                effective = decided.date()
                next_review = add_months(effective, 12)
                status = "effective" if last else "obsolete"
                version_rows.append(
                    {
                        "document_id": doc_id,
                        "version": version,
                        "status": status,
                        "path": "-",
                        "content_sha256": sha,
                        "git_commit": None,
                        "effective_date": effective,
                        "next_review_date": next_review,
                        "comment": None,
                        "created_at": when,
                    }
                )
                subject = f"document-version:{doc_id}@{version}"
                request_rows.append(
                    {
                        "id": request_id,
                        "key": f"demo:{request_id}",
                        "subject": subject,
                        "title": f"{doc_id} v{version}",
                        "content_sha256": sha,
                        "approvers": [a.id for a in approvers],
                        "required": 1,
                        "meaning": f"approve {doc_id} v{version} for use",
                        "author": owner,
                        "due_date": (when + timedelta(days=14)).date(),
                        "status": "approved",
                        "flow_run_id": None,
                        "data": {"document_id": doc_id, "version": version},
                        "created_at": when,
                        "decided_at": decided,
                        "process": "document-control",
                    }
                )
                uow.record(
                    "document-version.snapshot",
                    f"document-version:{doc_id}@{version}",
                    None,
                    {"version": version, "content_sha256": sha},
                    actor=owner,
                    at=when,
                )
                uow.record(
                    "approval.requested", f"approval:{request_id}", None, {"subject": subject}, actor=owner, at=when
                )
                if signer is not None:
                    sig = Signature(
                        signer=signer.id,
                        printed_name=signer.name,
                        at=decided,
                        meaning=f"approve {doc_id} v{version} for use",
                        decision=Decision.APPROVE,
                        method=rng.choice(list(Method)),
                        content_sha256=sha,
                    )
                    event = uow.record(
                        "approval.signed",
                        f"approval:{request_id}",
                        None,
                        sig.model_dump(mode="json"),
                        actor=signer.id,
                        at=when,
                    )
                    signature_rows.append({**sig.model_dump(), "request_id": request_id, "trail_seq": event.seq})
                uow.record(
                    "document-version.effective",
                    f"document-version:{doc_id}@{version}",
                    None,
                    {"status": "effective", "effective_date": effective.isoformat()},
                    actor="qmsflow",
                    at=when,
                )
                batch_events += 4
            else:
                counters["CAPA"][year] = counters["CAPA"].get(year, 0) + 1
                capa_id = f"CAPA-{year}-{counters['CAPA'][year]:05d}"
                age_days = (today - when.date()).days
                stage_index = min(len(STAGES) - 1, int(age_days / rng.uniform(20, 60)))
                if age_days > 400 and rng.random() < 0.97:
                    stage_index = len(STAGES) - 1
                status = STAGES[stage_index]
                owner = rng.choice(people)
                due = when.date() + timedelta(days=30 * (stage_index + 1))
                updated = min(
                    when + timedelta(days=30 * stage_index + rng.random() * 20),
                    datetime.combine(today, datetime.min.time(), UTC),
                )
                capa_rows.append(
                    {
                        "id": capa_id,
                        "kind": "capa",
                        "key": None,
                        "title": f"Nonconformity {capa_id}: {rng.choice(['data drift', 'label error', 'missed test', 'late review', 'incident'])}",
                        "status": status,
                        "owner": owner,
                        "process": "capa",
                        "due_date": due,
                        "systems": [f"sys{rng.randint(1, 50):02d}"],
                        "data": {"source": rng.choice(["complaint", "incident", "audit", "release", "pms", "other"])},
                        "links": [],
                        "created_at": when,
                        "updated_at": updated,
                    }
                )
                ref = f"record:{capa_id}"
                uow.record(
                    "capa.created", ref, None, {"title": capa_rows[-1]["title"], "owner": owner}, actor=owner, at=when
                )
                previous = "opened"
                for step in range(1, events_per_capa):
                    stage = STAGES[min(step, stage_index)] if stage_index else "opened"
                    uow.record(
                        "capa.advanced" if stage != previous else "capa.updated",
                        ref,
                        {"status": previous},
                        {"status": stage, "note": f"step {step}"},
                        actor=owner,
                        at=when,
                    )
                    previous = stage
                batch_events += events_per_capa
            if batch_events >= 20_000:
                _flush(uow, capa_rows, version_rows, request_rows, signature_rows)
                written += batch_events
                batch_events = 0
                say("events", written, target_events)
        _flush(uow, capa_rows, version_rows, request_rows, signature_rows)
        written += batch_events
        for prefix, per_year in counters.items():
            for year, last in per_year.items():
                uow.session.merge(IdCounterRow(prefix=prefix, year=year, last=last))
        uow.commit()
        say("events", written, target_events)
    finally:
        uow.__exit__(None, None, None)
    return {"documents": len(config.documents), "document_versions": version_count, "capas": capas, "events": written}


def _flush(uow: UnitOfWork, capa_rows: list, version_rows: list, request_rows: list, signature_rows: list) -> None:
    conn = uow.session.connection()
    if capa_rows:
        conn.execute(insert(RecordRow.__table__), capa_rows)
    if version_rows:
        conn.execute(insert(DocumentVersionRow.__table__), version_rows)
    if request_rows:
        conn.execute(insert(ApprovalRequestRow.__table__), request_rows)
    uow.trail.flush()
    if signature_rows:
        conn.execute(insert(SignatureRow.__table__), signature_rows)
    uow.commit()
    capa_rows.clear()
    request_rows.clear()
    signature_rows.clear()
    version_rows.clear()
