"""Release validation from CI: qms release validate / status.

Exit codes (both commands): 0 released (criteria met and signed), 1 criteria failed (a CAPA is opened) or
the evidence was refused, 2 awaiting signature (``--no-wait``, or the wait timed out), 3 rejected by a
signer, 4 blocked (a CAPA of severity high or critical is open on the system, no override yet).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..domain.capabilities import declare
from .common import ActorOpt, CliError, ConfigOpt, TokenFileOpt, _ctx, _who, app, err, out

release_app = typer.Typer(help="Release validation from CI: evidence in, signed report out, exit codes to gate on.")
app.add_typer(release_app, name="release")

POLL_SECONDS = 0.5
DEPLOYMENT = "release-validation/on-demand"
WAITING = ("submitted", "awaiting-signature")


def _read(path: Path, what: str) -> tuple[str, bytes]:
    from ..services.contents import MAX_BYTES

    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise CliError(f"{what} {path}: {size:,} bytes is over the limit of {MAX_BYTES:,} bytes")
        return path.name, path.read_bytes()
    except OSError as exc:
        raise CliError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None


# _artifact: hashed here, recorded with the release evidence by services/release.py (_manifest)
ARTIFACT_HASHES = declare(
    "release.artifact_hashes_recorded",
    "qmsflow records, with the evidence of a release validation, the name, size and SHA-256 hash of each "
    "artifact given with `qms release validate --artifact NAME=PATH` (for example the model weights or a "
    "dataset manifest); it keeps the hash, not the artifact itself.",
    proved_by=("tests/integration/test_release.py::test_cli_met_awaits_signature_then_status_gates",),
    module=__name__,
)


def _artifact(spec: str) -> dict:
    from ..services.common import sha256_file

    name, sep, value = spec.partition("=")
    if not sep or not name.strip() or not value:
        raise CliError(f"--artifact {spec!r}: give NAME=PATH (e.g. model=dist/model.onnx)")
    path = Path(value)
    try:
        return {"name": name.strip(), "path": value, "sha256": sha256_file(path), "size": path.stat().st_size}
    except OSError as exc:
        raise CliError(f"--artifact {name}: cannot read {value} ({exc.strerror or exc})") from None


def _print(summary: dict) -> None:
    words = {
        "released": "[green]released[/]: criteria met and signed",
        "failed": "[red]criteria failed[/]",
        "submitted": "[yellow]submitted[/]: not judged yet",
        "awaiting-signature": "[yellow]awaiting signature[/]: criteria met",
        "rejected": "[red]rejected[/] by a signer",
        "blocked": "[red]blocked[/]",
    }
    out.print(
        f"{summary['id']} {escape(summary['system'])} {escape(summary['version'])}: "
        f"{words.get(summary['status'], summary['status'])} (exit {summary['exit_code']})"
    )
    if summary.get("criteria_version"):
        out.print(f"criteria version {summary['criteria_version']}")
    for line in summary["failed"]:
        out.print(f"  [red]FAILED[/] {escape(line)}")
    if summary.get("capa"):
        out.print(f"CAPA {summary['capa']} opened (source release)")
    if summary["status"] == "blocked":
        out.print(
            f"blocked by open CAPA {', '.join(summary['blocked_by'])}; a quality lead may override it: "
            f"qms approve {summary['override_request']} --decision approve --comment JUSTIFICATION"
        )
    if summary["status"] == "awaiting-signature" and summary.get("request"):
        out.print(f"signatures: qms approvals show {summary['request']}")
    if summary.get("deviation"):
        out.print(f"override recorded as deviation {summary['deviation']}")


def _summary(ctx, release_id: str) -> dict:  # noqa: ANN001
    from ..services import release
    from ..store.uow import UnitOfWork

    with UnitOfWork(ctx.db, "qmsflow") as uow:
        return release.summary(uow, release.load(uow, release_id))


def _wait(ctx, release_id: str, until: tuple[str, ...], deadline: float) -> dict:  # noqa: ANN001
    summary = _summary(ctx, release_id)
    while summary["status"] in until and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        summary = _summary(ctx, release_id)
    return summary


@release_app.command("validate")
def release_validate(
    system: Annotated[str, typer.Option(help="The AI system (its id in qms.yaml).")],
    version: Annotated[str, typer.Option(help="The version being released.")],
    junit: Annotated[
        Optional[list[Path]], typer.Option(help="JUnit XML (pytest, Surefire, jest-junit) or CTRF JSON (repeatable).")
    ] = None,
    metrics: Annotated[
        Optional[list[Path]], typer.Option(help="Metrics JSON (docs/release-validation.md) or an MLflow run export.")
    ] = None,
    artifact: Annotated[
        Optional[list[str]], typer.Option(help="NAME=PATH of an artifact to hash (model weights, dataset manifest).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for the signatures (else exit 2 once judged).")
    ] = True,
    timeout: Annotated[
        int, typer.Option(help="Seconds to wait for the verdict and the signatures.", min=1, max=86400)
    ] = 3600,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the verdict it would be; record nothing.")] = False,
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    token_file: TokenFileOpt = None,
) -> int:
    """Validate a release: keep the evidence, judge it against the system's pre-registered criteria in a flow
    run, request the signatures; exit 0 released, 1 failed, 2 awaiting signature, 3 rejected, 4 blocked."""
    from ..adapters import prefect_api
    from ..domain.errors import DomainError
    from ..domain.release import EvidenceError
    from ..services import release
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    tests = [_read(p, "--junit") for p in junit or []]
    metric_files = [_read(p, "--metrics") for p in metrics or []]
    artifacts = [_artifact(a) for a in artifact or []]
    if dry_run:
        with UnitOfWork(ctx.db, "qmsflow") as uow:
            try:
                parsed_tests, parsed_metrics = release.parse_evidence(tests, metric_files)
            except EvidenceError as exc:
                raise CliError(f"evidence refused: {exc}") from None
            verdict = release.judge(uow, ctx.config, system, parsed_tests, parsed_metrics, datetime.now(UTC))
            blockers = release.blocking_capas(uow, system)
        status = "failed" if not verdict.passed else "blocked" if blockers else "awaiting-signature"
        summary = {
            "id": "dry run",
            "system": system,
            "version": version,
            "status": status,
            "exit_code": release.EXIT_CODES[status],
            "criteria_version": verdict.criteria_version,
            "failed": [f"{o.criterion}: {o.reason}" for o in verdict.failed],
            "blocked_by": blockers,
            "override_request": "(none: dry run)",
        }
        _print(summary)
        out.print("dry run: nothing recorded")
        return summary["exit_code"]
    who = _who(ctx, actor, token_file).id
    with UnitOfWork(ctx.db, who) as uow:
        try:
            row = release.submit(
                uow,
                ctx.config,
                system_id=system,
                version=version,
                submitted_by=who,
                tests=tests,
                metrics=metric_files,
                artifacts=[{k: v for k, v in a.items() if k != "path"} for a in artifacts],
            )
        except (EvidenceError, DomainError) as exc:
            release.refuse(uow, system, version, exc)
            raise CliError(f"{'evidence ' if isinstance(exc, EvidenceError) else ''}refused: {exc}") from None
        release_id = row.id
    try:
        endpoint = prefect_api.locate(ctx.loaded.state_dir)
        run_id = prefect_api.start_run(
            endpoint, DEPLOYMENT, {"release_id": release_id}, idempotency_key=f"release:{release_id}"
        )
    except prefect_api.PrefectUnavailable as exc:
        raise CliError(
            f"{release_id} recorded, but its validation did not start: {exc}; run the same command again "
            "once the stack runs (the same evidence gives the same record)"
        ) from None
    err.print(f"{release_id}: validation started (flow run {run_id})")
    deadline = time.monotonic() + timeout
    summary = _wait(ctx, release_id, ("submitted",), deadline)
    if wait:
        summary = _wait(ctx, release_id, WAITING, deadline)
    _print(summary)
    return summary["exit_code"]


@release_app.command("status")
def release_status(
    system: Annotated[str, typer.Option(help="The AI system (its id in qms.yaml).")],
    version: Annotated[str, typer.Option(help="The version.")],
    config: ConfigOpt = None,
) -> int:
    """The verdict of a release's latest validation, with the exit codes of 'validate' (a deploy job gates on it)."""
    from ..services import release
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        row = release.latest(uow, system, version)
        if row is None:
            raise CliError(f"no validation of {system} {version}: run 'qms release validate' first")
        summary = release.summary(uow, row)
    _print(summary)
    return summary["exit_code"]
