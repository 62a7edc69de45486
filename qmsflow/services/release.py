"""Release validation use cases: register criteria, submit evidence, evaluate, sign, override, report.

A validation is a QMS record of kind ``release`` (``REL-YYYY-NNNN``) whose status is its verdict:

- ``submitted``: evidence kept in the content store, not judged yet (the flow judges it);
- ``failed``: a criterion failed (each named); a CAPA (source ``release``) is opened and linked;
- ``blocked``: criteria met, but a CAPA of severity high or critical is open on the system; a quality
  lead may override it by signing the override request with a justification (recorded as a deviation);
- ``awaiting-signature``: criteria met, the report waits for the signers named in ``qms.yaml``;
- ``released`` / ``rejected``: the report was signed, or a signer rejected it.

``EXIT_CODES`` maps a status to the exit code of ``qms release validate`` and ``qms release status``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ..domain import limits
from ..domain.approvals import Signature
from ..domain.capabilities import declare
from ..domain.errors import DomainError
from ..domain.organisation import QmsConfig
from ..domain.records import CLOSED_STATUSES
from ..domain.refs import Ref
from ..domain.release import (
    EvidenceError,
    MetricsEvidence,
    ReleaseSettings,
    ResultsEvidence,
    Verdict,
    criteria_version,
    evaluate,
    parse_metrics,
    parse_tests,
)
from ..store.tables import ApprovalRequestRow, RecordRow, SignatureRow, TrailEventRow
from ..store.uow import UnitOfWork
from . import contents
from .approvals import open_request
from .common import row_values
from .reactions import on_decided
from .records import NotFound, create_record, update_record
from .review_inputs import Figure, provides

EXIT_CODES = {
    "released": 0,
    "failed": 1,
    "submitted": 2,
    "awaiting-signature": 2,
    "rejected": 3,
    "blocked": 4,
}
BLOCKING_SEVERITIES = ("high", "critical")
QUALITY_LEAD = "quality-lead"
CRITERIA_EVENT = "release.criteria"
XML = "application/xml"
JSON = "application/json"
MAX_EVIDENCE_FILES = 50


def criteria_ref(system_id: str) -> str:
    return str(Ref("release-criteria", system_id))


def _settings(config: QmsConfig, system_id: str) -> ReleaseSettings:
    system = config.system(system_id)
    if system is None:
        raise DomainError(
            f"{system_id!r} is not an AI system of this QMS (systems: {', '.join(s.id for s in config.systems) or 'none'})"
        )
    if system.release is None:
        raise DomainError(
            f"AI system {system_id!r} has no release criteria: add systems[].release to qms.yaml "
            "(docs/release-validation.md) and run 'qms sync'"
        )
    return system.release


# ------------------------------------------------------------------ pre-registration of criteria


def _latest_registration(uow: UnitOfWork, system_id: str) -> tuple[str, datetime] | None:
    row = uow.session.scalar(
        select(TrailEventRow)
        .where(TrailEventRow.record == criteria_ref(system_id), TrailEventRow.action == CRITERIA_EVENT)
        .order_by(TrailEventRow.seq.desc())
        .limit(1)
    )
    if row is None:
        return None
    event = json.loads(row.canonical)
    return event["after"]["version"], datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))


# SOP-TST-001 4.2: register_criteria (run by `qms sync`) and the preregistration criterion of domain.release
CRITERIA_PREREGISTERED = declare(
    "release.criteria_preregistered",
    "When qmsflow syncs qms.yaml (`qms sync`, `qms up`) it records in the audit trail the version of each "
    "system's release criteria (`systems[].release.criteria`; the version is the SHA-256 of the criteria), "
    "once per version. A validation whose evidence was produced before the criteria version it is judged "
    "against was recorded fails, and the failure is named in the validation report.",
    proved_by=(
        "tests/integration/test_release.py::test_sync_registers_the_criteria_version_once",
        "tests/integration/test_release.py::test_criteria_changed_after_the_evidence_fail",
        "tests/unit/test_release_domain.py::test_criteria_registered_after_the_evidence_fail_named",
    ),
    module=__name__,
)


def register_criteria(uow: UnitOfWork, config: QmsConfig) -> list[str]:
    """Record ``release.criteria`` for each system whose criteria version is not the one last recorded
    (building block of ``sync_config``; never commits). Returns what it recorded."""
    done = []
    for system in config.systems:
        if system.release is None:
            continue
        version = criteria_version(system.release.criteria)
        latest = _latest_registration(uow, system.id)
        if latest is not None and latest[0] == version:
            continue
        uow.record(
            CRITERIA_EVENT,
            criteria_ref(system.id),
            {"version": latest[0]} if latest else None,
            {
                "system": system.id,
                "version": version,
                "criteria": [c.model_dump(mode="json", exclude_none=True) for c in system.release.criteria],
            },
        )
        done.append(f"{criteria_ref(system.id)} version {version[:12]} recorded")
    return done


def registered_at(uow: UnitOfWork, system_id: str, version: str) -> datetime | None:
    """When ``version`` became the system's current criteria (its latest registration), or None when the
    trail's current criteria of the system are another version (or none)."""
    latest = _latest_registration(uow, system_id)
    return latest[1] if latest is not None and latest[0] == version else None


# ------------------------------------------------------------------ submission (authenticated caller)


def _check_version(version: str) -> None:
    limits.check_text("version", version, limits.ID)
    if not version or not all(c.isalnum() or c in "._+-" for c in version) or not version[0].isalnum():
        raise DomainError(
            f"version {version!r}: letters, digits, '.', '_', '+' or '-', starting with a letter or digit"
        )


def parse_evidence(
    tests: list[tuple[str, bytes]], metrics: list[tuple[str, bytes]]
) -> tuple[list[ResultsEvidence], list[MetricsEvidence]]:
    """Parse every file; the first that cannot be read raises ``EvidenceError`` naming it."""
    if len(tests) + len(metrics) > MAX_EVIDENCE_FILES:
        raise EvidenceError(f"at most {MAX_EVIDENCE_FILES} evidence files per validation")
    return [parse_tests(body, name) for name, body in tests], [parse_metrics(body, name) for name, body in metrics]


def refuse(uow: UnitOfWork, system_id: str, version: str, error: Exception) -> None:
    """Record a refused validation (unreadable evidence, unknown system) in the trail and commit."""
    uow.rollback()
    uow.record("release.refused", f"release:{system_id}@{version}", None, {"refused": str(error)})
    uow.commit()


def _manifest(tests: list[tuple[str, bytes]], metrics: list[tuple[str, bytes]], artifacts: list[dict]) -> list[dict]:
    files = [{"name": n, "role": "tests", "sha256": contents.digest(b), "size": len(b)} for n, b in tests]
    files += [{"name": n, "role": "metrics", "sha256": contents.digest(b), "size": len(b)} for n, b in metrics]
    return files + [{"role": "artifact", **a} for a in artifacts]


# SOP-TST-001 4.6: submit, evaluate_release and render_report (`qms release validate`)
VALIDATION = declare(
    "release.validation",
    "`qms release validate`, run under a person's token, keeps in qmsflow's content store the test reports "
    "(JUnit XML or CTRF), the metrics file and the SHA-256 of each artifact named (model weights, dataset "
    "manifests); a malformed file is refused, naming the file and line, and the refusal recorded in the audit "
    "trail. qmsflow judges each criterion of the system in qms.yaml (a missing metric, group or test fails "
    "its criterion) and renders the validation report as HTML and PDF: system, version, criteria version, "
    "the result of each criterion with its evidence, test totals per suite, the requirements the tests "
    "trace to, the SHA-256 of every file and artifact, and the dates.",
    proved_by=(
        "tests/integration/test_release.py::test_released_after_all_signatures_and_verified",
        "tests/integration/test_release.py::test_malformed_evidence_refused_and_recorded",
        "tests/unit/test_release_domain.py::test_no_evidence_at_all_fails_every_criterion",
    ),
    module=__name__,
)


# SOP-TST-001 4.6: the signature request and EXIT_CODES
SIGNED_AND_GATED = declare(
    "release.signed_and_gated",
    "A validation that meets its criteria waits for the signatures of the persons named as the system's "
    "release signers in qms.yaml, given through the shared approval step (the dashboard, Slack or `qms "
    "approve`). `qms release validate` and `qms release status` exit with the verdict: 0 released, 1 "
    "criteria failed, 2 awaiting signature, 3 rejected by a signer, 4 blocked.",
    proved_by=(
        "tests/integration/test_release.py::test_released_after_all_signatures_and_verified",
        "tests/integration/test_release.py::test_cli_met_awaits_signature_then_status_gates",
        "tests/integration/test_release.py::test_rejected_by_a_signer",
    ),
    module=__name__,
)


def submit(
    uow: UnitOfWork,
    config: QmsConfig,
    *,
    system_id: str,
    version: str,
    submitted_by: str,
    tests: list[tuple[str, bytes]],
    metrics: list[tuple[str, bytes]],
    artifacts: list[dict] | None = None,
) -> RecordRow:
    """Keep the evidence of one release in the content store and record the validation (``submitted``);
    idempotent: the same system, version and evidence give the same record. Malformed evidence is refused
    here, before any run starts (``EvidenceError`` naming the file and line)."""
    _check_version(version)
    release = _settings(config, system_id)
    if not tests and not metrics:
        raise DomainError("no evidence: give --junit and/or --metrics files")
    parse_evidence(tests, metrics)
    artifacts = list(artifacts or [])
    manifest = _manifest(tests, metrics, artifacts)
    evidence_key = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    for name, body in tests:
        contents.store(uow, body, JSON if body.lstrip()[:1] == b"{" else XML)
    for name, body in metrics:
        contents.store(uow, body, JSON)
    process = release.process if release.process in {p.key for p in config.processes} else None
    row, _ = create_record(
        uow,
        "release",
        f"{system_id} {version}",
        key=f"release:{system_id}:{version}:{evidence_key}",
        owner=submitted_by,
        process=process,
        systems=[system_id],
        status="submitted",
        data={
            "system": system_id,
            "version": version,
            "submitted_by": submitted_by,
            "submitted_at": uow.now().isoformat(),
            "evidence": manifest,
        },
    )
    uow.commit()
    return row


def load(uow: UnitOfWork, release_id: str) -> RecordRow:
    row = uow.session.get(RecordRow, release_id, populate_existing=True)
    if row is None or row.kind != "release":
        raise NotFound(f"no release validation {release_id}")
    return row


def latest(uow: UnitOfWork, system_id: str, version: str) -> RecordRow | None:
    """The latest validation of a system's version (what ``qms release status`` answers for)."""
    rows = uow.session.scalars(
        select(RecordRow)
        .where(RecordRow.kind == "release", RecordRow.title == f"{system_id} {version}")
        .order_by(RecordRow.created_at.desc(), RecordRow.id.desc())
    ).all()
    return next((r for r in rows if r.data.get("system") == system_id and r.data.get("version") == version), None)


# ------------------------------------------------------------------ evaluation (the flow's step)


def blocking_capas(uow: UnitOfWork, system_id: str) -> list[str]:
    """Open CAPAs of severity high or critical on the system (they block a release)."""
    rows = uow.session.scalars(
        select(RecordRow).where(RecordRow.kind == "capa", RecordRow.status.not_in(CLOSED_STATUSES))
    ).all()
    return sorted(
        r.id for r in rows if system_id in (r.systems or []) and r.data.get("severity") in BLOCKING_SEVERITIES
    )


def _evidence_bodies(uow: UnitOfWork, row: RecordRow) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    tests, metrics = [], []
    for item in row.data["evidence"]:
        if item["role"] not in ("tests", "metrics"):
            continue
        content = contents.load(uow.session, item["sha256"])
        if content is None:
            raise DomainError(f"{row.id}: evidence {item['name']} ({item['sha256'][:12]}…) is missing from the store")
        (tests if item["role"] == "tests" else metrics).append((item["name"], content.body))
    return tests, metrics


def judge(uow: UnitOfWork, config: QmsConfig, system_id: str, tests, metrics, submitted_at: datetime) -> Verdict:  # noqa: ANN001
    """The verdict on parsed evidence (also ``--dry-run``: records nothing)."""
    release = _settings(config, system_id)
    version = criteria_version(release.criteria)
    return evaluate(
        release,
        tests,
        metrics,
        registered_at=registered_at(uow, system_id, version),
        submitted_at=submitted_at,
    )


def _report_content(row: RecordRow, verdict: dict[str, Any], target: str) -> str:
    return contents.record_body(
        {
            "record": {k: v for k, v in row_values(row).items() if k not in ("created_at", "updated_at")},
            "step": {"kind": "release", "id": row.id, "target": target, "title": "Release validation report"},
            "fields": verdict,
        }
    )


def _open_signatures(uow: UnitOfWork, config: QmsConfig, row: RecordRow, flow_run_id: str | None) -> ApprovalRequestRow:
    system_id = row.data["system"]
    release = _settings(config, system_id)
    signers = [p.id for p in config.release_signers(system_id)]
    content = contents.store(uow, _report_content(row, row.data["verdict"], "released"), contents.RECORD_JSON)
    request, _ = open_request(
        uow,
        config,
        key=f"release:{row.id}:released",
        subject=str(Ref("release", row.id, "released")),
        title=f"{row.id} {system_id} {row.data['version']}: sign the release validation report",
        what=f"the release validation report of {system_id} {row.data['version']}",
        content_sha256=content,
        approvers=signers,
        required=release.required_signatures,
        author=row.data["submitted_by"] if row.data["submitted_by"] in {p.id for p in config.people} else None,
        meaning=f"approves the release of {system_id} {row.data['version']} as validated ({row.id})",
        data={"release": row.id, "target": "released"},
        process=row.process,
        flow_run_id=flow_run_id,
    )
    return request


def _open_override(
    uow: UnitOfWork, config: QmsConfig, row: RecordRow, blockers: list[str], flow_run_id: str | None
) -> ApprovalRequestRow:
    leads = [p.id for p in config.people if QUALITY_LEAD in p.roles]
    if not leads:
        raise DomainError(f"{row.id} is blocked and nobody could override it: no person has the role {QUALITY_LEAD!r}")
    body = _report_content(row, {**row.data["verdict"], "blocked_by": blockers}, "override")
    content = contents.store(uow, body, contents.RECORD_JSON)
    request, _ = open_request(
        uow,
        config,
        key=f"release:{row.id}:override",
        subject=str(Ref("release", row.id, "override")),
        title=f"{row.id} {row.data['system']} {row.data['version']}: blocked by {', '.join(blockers)}; override?",
        what=f"an override of the block of {row.id} (open CAPA {', '.join(blockers)}); approve only with a justification",
        content_sha256=content,
        approvers=leads,
        required=1,
        author=None,
        meaning=f"overrides the block of {row.id} by {', '.join(blockers)}, recorded as a deviation",
        data={"release": row.id, "target": "override", "blocked_by": blockers},
        process=row.process,
        flow_run_id=flow_run_id,
    )
    return request


def evaluate_release(uow: UnitOfWork, config: QmsConfig, release_id: str, flow_run_id: str | None = None) -> dict:
    """Judge a submitted validation once: failed (CAPA opened and linked), blocked (override request
    opened), or awaiting signature (signature request opened). Idempotent: a judged validation is
    returned as it is (a CAPA whose opening was interrupted is opened now)."""
    row = load(uow, release_id)
    if row.status == "submitted":
        tests, metrics = parse_evidence(*_evidence_bodies(uow, row))
        verdict = judge(
            uow, config, row.data["system"], tests, metrics, datetime.fromisoformat(row.data["submitted_at"])
        )
        data = {**row.data, "verdict": verdict.as_dict(), "judged_at": uow.now().isoformat()}
        if flow_run_id:
            data["flow_run_id"] = flow_run_id
        if not verdict.passed:
            update_record(uow, row, "failed", status="failed", data=data)
        else:
            blockers = blocking_capas(uow, row.data["system"])
            if blockers:
                update_record(uow, row, "blocked", status="blocked", data={**data, "blocked_by": blockers})
                request = _open_override(uow, config, row, blockers, flow_run_id)
                update_record(uow, row, "override-requested", data={**row.data, "override_request": request.id})
            else:
                update_record(uow, row, "judged", status="awaiting-signature", data=data)
                request = _open_signatures(uow, config, row, flow_run_id)
                update_record(uow, row, "signature-requested", data={**row.data, "request": request.id})
        uow.commit()
    if row.status == "failed" and not row.data.get("capa"):
        _open_capa(uow, config, row)
    return summary(uow, row)


# SOP-TST-001 4.7: _open_capa below
FAILED_OPENS_CAPA = declare(
    "release.failed_opens_capa",
    "A validation that fails a criterion opens one CAPA (source release) on the system, naming each failed "
    "criterion and linked both ways to the validation.",
    proved_by=("tests/integration/test_release.py::test_failed_criteria_open_a_linked_capa",),
    module=__name__,
)


# SOP-TST-001 4.7: blocking_capas, _open_override and on_request_decided
BLOCKED_OVERRIDE = declare(
    "release.blocked_override",
    "While a CAPA of severity high or critical is open on the system, qmsflow blocks a validation that met "
    "its criteria and asks the quality leads to sign an override. It refuses an override signed without a "
    "written justification, keeps the release blocked when the override is declined, and records a signed "
    "override as a deviation record, shown in the validation report and counted in the next management "
    "review's input pack.",
    proved_by=(
        "tests/integration/test_release.py::test_blocked_by_a_major_capa_until_a_signed_override",
        "tests/integration/test_release.py::test_override_declined_stays_blocked",
        "tests/integration/test_release.py::test_the_management_review_sees_the_quarters_validations_gaps_and_deviations",
    ),
    module=__name__,
)


def _open_capa(uow: UnitOfWork, config: QmsConfig, row: RecordRow) -> None:
    from .capa import open_capa

    system_id = row.data["system"]
    release = _settings(config, system_id)
    failed = [o for o in row.data["verdict"]["outcomes"] if not o["passed"]]
    process = next((p for p in config.processes if p.key == release.process), None)
    owner = process.owner if process else config.release_signers(system_id)[0].id
    capa_process = "capa" if any(p.key == "capa" for p in config.processes) else release.process
    capa = open_capa(
        uow,
        config,
        title=f"Release {system_id} {row.data['version']} failed validation ({row.id})"[: limits.RECORD_TITLE],
        source="release",
        owner=owner,
        process=capa_process,
        severity="medium",
        description="\n".join(f"{o['criterion']}: {o['reason']}" for o in failed)[: limits.TEXT],
        systems=[system_id],
        key=f"release-capa:{row.id}",
        links=[f"record:{row.id}"],
    )
    row = load(uow, row.id)
    update_record(uow, row, "capa-linked", links=[*row.links, f"record:{capa.id}"], data={**row.data, "capa": capa.id})
    uow.commit()


def summary(uow: UnitOfWork, row: RecordRow) -> dict[str, Any]:
    verdict = row.data.get("verdict") or {}
    return {
        "id": row.id,
        "system": row.data.get("system"),
        "version": row.data.get("version"),
        "status": row.status,
        "exit_code": EXIT_CODES.get(row.status, 2),
        "criteria_version": verdict.get("criteria_version"),
        "failed": [f"{o['criterion']}: {o['reason']}" for o in verdict.get("outcomes", []) if not o["passed"]],
        "capa": row.data.get("capa"),
        "blocked_by": row.data.get("blocked_by", []),
        "request": row.data.get("request"),
        "override_request": row.data.get("override_request"),
        "deviation": row.data.get("deviation"),
    }


def request_of(uow: UnitOfWork, release_id: str) -> dict[str, Any] | None:
    """The request the flow waits for now (the override while blocked, else the signatures), as the
    waiting step reads it; None when nothing is to be waited for."""
    from .review import request_summary

    row = load(uow, release_id)
    request_id = row.data.get("request") or (row.data.get("override_request") if row.status == "blocked" else None)
    return request_summary(uow, request_id) if request_id else None


# ------------------------------------------------------------------ decisions


@on_decided("release")
def on_request_decided(uow: UnitOfWork, config: QmsConfig, request: ApprovalRequestRow, signature: Signature) -> None:
    """In the transaction of the deciding signature: the signed report releases (or a rejection rejects);
    a signed override records a deviation and asks for the report's signatures."""
    row = load(uow, request.data["release"])
    target = request.data.get("target")
    if target == "released":
        if row.status != "awaiting-signature":
            return
        status = "released" if request.status == "approved" else "rejected"
        update_record(uow, row, status, status=status, data={**row.data, "decided_at": uow.now().isoformat()})
        return
    if target != "override" or row.status != "blocked" or row.data.get("deviation"):
        return
    if request.status != "approved":
        update_record(uow, row, "override-declined", data={**row.data, "override_declined": request.id})
        return
    justification = (signature.comment or "").strip()
    if len(justification) < 10:
        raise DomainError(
            f"an override of {row.id} needs a justification: sign it with --comment saying why the release may "
            "go ahead while the CAPA is open (at least 10 characters)"
        )
    deviation, _ = create_record(
        uow,
        "deviation",
        f"Release {row.data['system']} {row.data['version']} released past open CAPA {', '.join(row.data['blocked_by'])}"[
            : limits.RECORD_TITLE
        ],
        key=f"release-override:{row.id}",
        owner=signature.signer,
        process="qms-governance" if any(p.key == "qms-governance" for p in config.processes) else None,
        systems=[row.data["system"]],
        links=[f"record:{row.id}", *(f"record:{c}" for c in row.data["blocked_by"])],
        data={
            "release": row.id,
            "blocked_by": row.data["blocked_by"],
            "justification": justification,
            "signed_by": signature.signer,
            "approval": request.id,
            "for": "management review",
        },
    )
    override = {
        "by": signature.signer,
        "at": signature.at.isoformat(),
        "justification": justification,
        "request": request.id,
    }
    update_record(
        uow,
        row,
        "overridden",
        status="awaiting-signature",
        links=[*row.links, f"record:{deviation.id}"],
        data={**row.data, "deviation": deviation.id, "override": override},
    )
    signatures = _open_signatures(uow, config, row, row.data.get("flow_run_id"))
    update_record(uow, row, "signature-requested", data={**row.data, "request": signatures.id})


# ------------------------------------------------------------------ the report


def report_context(uow: UnitOfWork, config: QmsConfig, release_id: str) -> dict[str, Any]:
    """Everything the report shows, from the store alone."""
    row = load(uow, release_id)
    verdict = row.data.get("verdict") or {}
    signatures = []
    for request_id in [row.data.get("override_request"), row.data.get("request")]:
        if not request_id:
            continue
        request = uow.session.get(ApprovalRequestRow, request_id)
        for s in uow.session.scalars(
            select(SignatureRow).where(SignatureRow.request_id == request_id).order_by(SignatureRow.id)
        ):
            signatures.append(
                {
                    "request": request_id,
                    "name": s.printed_name,
                    "meaning": s.meaning,
                    "decision": s.decision,
                    "at": s.at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                    "method": s.method,
                    "comment": s.comment or "",
                    "content_sha256": s.content_sha256,
                    "request_content_sha256": request.content_sha256 if request else "",
                }
            )
    system = config.system(row.data["system"])
    return {
        "organisation": config.organisation.name,
        "release": {
            "id": row.id,
            "system": row.data["system"],
            "system_name": system.name if system else row.data["system"],
            "version": row.data["version"],
            "status": row.status,
            "submitted_by": row.data.get("submitted_by"),
            "submitted_at": row.data.get("submitted_at"),
            "judged_at": row.data.get("judged_at"),
            "capa": row.data.get("capa"),
            "blocked_by": row.data.get("blocked_by", []),
            "override": row.data.get("override"),
            "deviation": row.data.get("deviation"),
        },
        "verdict": verdict,
        "evidence": row.data.get("evidence", []),
        "signatures": signatures,
    }


def render_report(uow: UnitOfWork, config: QmsConfig, out_dir: Path, release_id: str) -> dict[str, str]:
    """HTML + PDF of the report under ``out_dir/releases/REL-…/`` (overwritten: idempotent); the HTML's hash
    is recorded on the record when it changed."""
    from ..adapters.render import html_environment, html_to_pdf

    context = report_context(uow, config, release_id)
    html = html_environment().get_template("reports/release_validation.html.j2").render(**context)
    uow.release()  # read only so far: hold no lock while the PDF renders (every writer waits on it)
    target = Path(out_dir) / "releases" / release_id
    target.mkdir(parents=True, exist_ok=True)
    html_path, pdf_path = target / f"{release_id}.html", target / f"{release_id}.pdf"
    html_path.write_text(html, encoding="utf-8")
    pdf_path.write_bytes(html_to_pdf(html, base_url=str(target)))
    digest = hashlib.sha256(html.encode("utf-8")).hexdigest()
    uow.rollback()  # the writers' lock again, before reading what the update depends on
    row = load(uow, release_id)
    if row.data.get("report", {}).get("html_sha256") != digest:
        update_record(
            uow, row, "report-rendered", data={**row.data, "report": {"html_sha256": digest, "status": row.status}}
        )
    uow.commit()
    return {"html": str(html_path), "pdf": str(pdf_path), "html_sha256": digest}


# ------------------------------------------------------------------ management review inputs (ADR 0026)


def _releases_in(session, window) -> list[RecordRow]:  # noqa: ANN001
    return list(
        session.scalars(
            select(RecordRow)
            .where(RecordRow.kind == "release", RecordRow.created_at >= window.start, RecordRow.created_at < window.end)
            .order_by(RecordRow.id)
        )
    )


@provides("c.release-validation", "release-validation")
def review_release_figures(session, config, window) -> list[Figure]:  # noqa: ANN001
    """Release validations of the quarter by verdict (released, failed, rejected, blocked, awaiting)."""
    rows = _releases_in(session, window)
    if not rows:
        return []
    figures = [Figure("release validations", len(rows), [r.id for r in rows])]
    for status in ("released", "failed", "rejected", "blocked", "awaiting-signature"):
        ids = [r.id for r in rows if r.status == status]
        figures.append(Figure(status.replace("-", " "), len(ids), ids))
    return figures


@provides("ai.fairness", "release-group-gaps")
def review_fairness_figures(session, config, window) -> list[Figure]:  # noqa: ANN001
    """The per-group gap each validation of the quarter measured, per system and criterion (oldest first),
    so that the review sees how the gaps moved."""
    figures = []
    for row in _releases_in(session, window):
        for outcome in (row.data.get("verdict") or {}).get("outcomes", []):
            observed = outcome.get("observed") or {}
            if "difference" in observed:
                figures.append(
                    Figure(
                        f"{row.title}: {outcome['criterion']} largest group gap",
                        observed["difference"],
                        [row.id],
                        note="met" if outcome.get("passed") else f"failed: {outcome.get('reason', '')}",
                    )
                )
    return figures


@provides("ai.deviations", "release-overrides")
def review_deviation_figures(session, config, window) -> list[Figure]:  # noqa: ANN001
    """Deviations recorded in the quarter (a quality lead's signed override of a blocked release)."""
    ids = list(
        session.scalars(
            select(RecordRow.id)
            .where(
                RecordRow.kind == "deviation", RecordRow.created_at >= window.start, RecordRow.created_at < window.end
            )
            .order_by(RecordRow.id)
        )
    )
    return [Figure("deviations (release overrides)", len(ids), ids)] if ids else []
