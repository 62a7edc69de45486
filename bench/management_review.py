"""Benchmark of gathering a management review's inputs, next to the same figures computed in SQL.

    python bench/management_review.py [--repo DIR] [--period 2026Q3] [--repeat 3]

--repo is a compliance repo on SQLite, e.g. one filled by `qms demo --scale large DIR`; when DIR holds
no qms.yaml the large demo is built into it first (a few minutes), and reused by later runs. The period
defaults to the quarter the quarterly flow would review today (the last completed one).

Everything is measured in this one process, side by side, ``--repeat`` times in alternating order (the
best of each is reported, as the least disturbed by other load on the machine):

- gather: exactly what ``services.management_review.start`` does to build the input pack, in a read
  session: ``window_for`` (the previous review, "since") and ``build_pack`` (every registered provider of
  ``services.review_inputs``, in the order of §9.3.2), the figures with the ids of the records behind them;
- baseline "sql": the same figures, with the same record ids in the same order, from hand-written SQL
  (``text()`` queries on one connection, filtering and JSON extraction in the database, only the labels
  and lists assembled in Python).

Before timing, the bench asserts that both give the same figures, input by input (label, value, record
ids, note), so that the two sides cannot silently do different work. The baseline is written for SQLite.

Goal (issue 19): gathering the inputs of a quarter on the large demo (10 years, 100,000 CAPAs, ~1M trail
events) <= 2 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from bench.timing import alternate  # noqa: E402
from qmsflow.domain.audit import RESULTS  # noqa: E402
from qmsflow.domain.capa import AGE_BUCKETS  # noqa: E402
from qmsflow.domain.management_review import Period, reviewed_period, zone  # noqa: E402
from qmsflow.domain.records import CLOSED_STATUSES  # noqa: E402
from qmsflow.services import management_review as mr  # noqa: E402
from qmsflow.services import review_inputs  # noqa: E402
from qmsflow.services.review_inputs import Window  # noqa: E402
from qmsflow.store import Database  # noqa: E402

QMS = str(Path(sys.executable).parent / "qms")
CLOSED = ", ".join(f"'{s}'" for s in sorted(CLOSED_STATUSES))


def build_demo(repo: Path) -> None:
    print(f"building the large demo in {repo} (SQLite; a few minutes) …", file=sys.stderr)
    env = {k: v for k, v in os.environ.items() if k != "QMS_DATABASE_URL"}
    subprocess.run([QMS, "demo", str(repo), "--scale", "large"], check=True, stdout=subprocess.DEVNULL, env=env)


# ------------------------------------------------------------------ the real code path


def gather(db: Database, config: Any, period: Period, as_of: datetime) -> dict[str, Any]:  # noqa: ANN401
    """What ``management_review.start`` does to build the pack (it then stores it and creates the record)."""
    with db.read() as session:
        window = mr.window_for(session, config, period, as_of)
        return mr.build_pack(session, config, window)


def per_provider(db: Database, config: Any, window: Window) -> dict[str, float]:  # noqa: ANN401
    """The time of each registered provider on its own (one run, after the timed ones)."""
    out: dict[str, float] = {}
    with db.read() as session:
        for key, entries in review_inputs._PROVIDERS.items():
            for name, provider in entries:
                t0 = time.perf_counter()
                provider(session, config, window)
                out[f"{key} ({name})"] = time.perf_counter() - t0
    return out


# ------------------------------------------------------------------ the baseline: the same figures in SQL


def _ts(moment: datetime) -> str:
    """A UTC instant as SQLAlchemy stores it in SQLite (naive UTC, microseconds)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _trail_ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _fig(label: str, value: Any, records: list[str], note: str = "") -> dict[str, Any]:  # noqa: ANN401
    out: dict[str, Any] = {"label": label, "value": value, "records": records}
    if note:
        out["note"] = note
    return out


def _ids(conn: Any, sql: str, **params: Any) -> list[str]:  # noqa: ANN401
    return [row[0] for row in conn.execute(text(sql), params)]


def baseline(db: Database, window: Window) -> dict[str, list[dict[str, Any]]]:
    """Input key -> its figures, computed with direct SQL on one connection."""
    today = window.as_of.date()
    start, end, since = _ts(window.start), _ts(window.end), _ts(window.since)
    out: dict[str, list[dict[str, Any]]] = {}
    with db.engine.connect() as conn:
        # a. actions of earlier reviews
        actions = _ids(conn, "SELECT id FROM records WHERE kind = 'mr-action' ORDER BY id")
        if actions:
            out["a.previous-actions"] = [
                _fig(
                    "open, rolled into this review",
                    *_n(
                        _ids(
                            conn,
                            f"SELECT id FROM records WHERE kind = 'mr-action' AND status NOT IN ({CLOSED}) ORDER BY id",
                        )
                    ),
                ),
                _fig(
                    f"of which overdue on {today.isoformat()}",
                    *_n(
                        _ids(
                            conn,
                            f"SELECT id FROM records WHERE kind = 'mr-action' AND status NOT IN ({CLOSED})"
                            " AND due_date < :today ORDER BY id",
                            today=today.isoformat(),
                        )
                    ),
                ),
                _fig(
                    "closed since the last review",
                    *_n(
                        _ids(
                            conn,
                            f"SELECT id FROM records WHERE kind = 'mr-action' AND status IN ({CLOSED})"
                            " AND updated_at >= :since ORDER BY id",
                            since=since,
                        )
                    ),
                ),
            ]
        else:
            out["a.previous-actions"] = []

        # b. regulatory watch (dates in the organisation's time zone) and changes synced from qms.yaml
        tz = zone(window.timezone)
        watch = _ids(
            conn,
            "SELECT id FROM records WHERE kind = 'watch-entry'"
            " AND json_extract(data, '$.noted_on') >= :a AND json_extract(data, '$.noted_on') < :b ORDER BY id",
            a=window.since.astimezone(tz).date().isoformat(),
            b=window.end.astimezone(tz).date().isoformat(),
        )
        out["b.regulatory-watch"] = [_fig("regulatory-watch entries", *_n(watch))] if watch else []
        changes = [
            f"{kind}.{action}"
            for kind in ("person", "process", "document")
            for action in ("created", "updated", "deactivated")
        ]
        synced = _ids(
            conn,
            "SELECT 'trail:' || seq FROM trail_events WHERE ts >= :a AND ts < :b"
            f" AND action IN ({', '.join(repr(c) for c in changes)}) ORDER BY seq",
            a=_trail_ts(window.since),
            b=_trail_ts(window.end),
        )
        versions = _ids(
            conn,
            "SELECT record FROM trail_events WHERE ts >= :a AND ts < :b AND action = 'document-version.effective'"
            " ORDER BY seq",
            a=_trail_ts(window.since),
            b=_trail_ts(window.end),
        )
        out["b.qms-changes"] = [
            _fig("changes synced from qms.yaml (people, processes, documents)", *_n(synced)),
            _fig("procedure and document versions made effective", *_n(versions)),
        ]

        # c. CAPAs: opened, closed, effectiveness decided in the quarter; open ones overdue and by age
        opened = _ids(
            conn,
            "SELECT id FROM records WHERE kind = 'capa' AND created_at >= :a AND created_at < :b ORDER BY id",
            a=start,
            b=end,
        )
        moves = conn.execute(
            text(
                "SELECT substr(record, 8), json_extract(canonical, '$.before.status'),"
                " json_extract(canonical, '$.after.status'),"
                " json_type(canonical, '$.after.data.stages.closed.risk_update'),"
                " json_extract(canonical, '$.after.data.stages.closed.risk_update')"
                " FROM trail_events WHERE ts >= :a AND ts < :b AND action = 'capa.advanced'"
                " AND (json_extract(canonical, '$.after.status') = 'closed'"
                "      OR json_extract(canonical, '$.before.status') = 'effectiveness_check')"
                " ORDER BY seq"
            ),
            {"a": _trail_ts(window.start), "b": _trail_ts(window.end)},
        ).all()
        closed = [i for i, _, after, _, _ in moves if after == "closed"]
        effective = [i for i, before, after, _, _ in moves if before == "effectiveness_check" and after == "closed"]
        ineffective = [i for i, before, after, _, _ in moves if before == "effectiveness_check" and after != "closed"]
        open_capa = f"SELECT id FROM records WHERE kind = 'capa' AND status NOT IN ({CLOSED})"
        capa = [
            _fig("opened this quarter", *_n(opened)),
            _fig("closed this quarter", *_n(closed)),
            _fig(
                f"open and overdue on {today.isoformat()}",
                *_n(_ids(conn, f"{open_capa} AND due_date < :today ORDER BY id", today=today.isoformat())),
            ),
        ]
        for label, low, high in AGE_BUCKETS:
            # whole days of age (timedelta.days) >= low  <=>  created <= as_of - low days; <= high  <=>  created > as_of - (high + 1) days
            sql, params = f"{open_capa} AND created_at <= :newest", {"newest": _ts(window.as_of - timedelta(days=low))}
            if high is not None:
                sql += " AND created_at > :oldest"
                params["oldest"] = _ts(window.as_of - timedelta(days=high + 1))
            capa.append(_fig(f"open, aged {label}", *_n(_ids(conn, sql + " ORDER BY id", **params))))
        capa.append(_fig("effectiveness checks: effective", *_n(effective)))
        capa.append(_fig("effectiveness checks: ineffective (back to root cause)", *_n(ineffective)))
        out["c.capa"] = capa

        # e. CAPA closures with / without a risk-register update (Python truthiness of the stored value)
        updated, reasons = [], []
        for capa_id, _, after, kind, value in moves:
            if after != "closed":
                continue
            truthy = kind not in (None, "null", "false") and value not in ("", 0, "[]", "{}")
            (updated if truthy else reasons).append(capa_id)
        out["e.risk-actions"] = (
            [
                _fig("CAPA closures that updated the risk register", *_n(updated)),
                _fig("CAPA closures with a reason for no risk update", *_n(reasons)),
            ]
            if updated or reasons
            else []
        )

        # c. internal audits concluded in [start's UTC date, the last instant's UTC date] (as the provider)
        first_day, last_day = (
            window.start.date().isoformat(),
            (window.end - timedelta(microseconds=1)).date().isoformat(),
        )
        counts = ", ".join(
            f"(SELECT count(*) FROM json_each(records.data, '$.items') WHERE json_extract(value, '$.result') = '{r}')"
            for r in RESULTS
        )
        audits = conn.execute(
            text(
                f"SELECT id, process, {counts} FROM records WHERE kind = 'audit'"
                " AND due_date IS NOT NULL AND process IS NOT NULL"
                " AND json_extract(data, '$.stages.reporting.concluded_on') BETWEEN :a AND :b ORDER BY id"
            ),
            {"a": first_day, "b": last_day},
        ).all()
        minor, major, improvement = (
            2 + RESULTS.index("minor"),
            2 + RESULTS.index("major"),
            2 + RESULTS.index("improvement"),
        )
        figures = [_fig("internal audits concluded", *_n([a[0] for a in audits]))] if audits else []
        for process in sorted({a[1] for a in audits}):
            mine = [a for a in audits if a[1] == process]
            figures.append(
                _fig(
                    f"{process}: nonconformities (minor / major)",
                    f"{sum(a[minor] for a in mine)} / {sum(a[major] for a in mine)}",
                    [a[0] for a in mine],
                )
            )
        findings = _ids(conn, f"SELECT id FROM records WHERE kind = 'finding' AND status NOT IN ({CLOSED}) ORDER BY id")
        if findings:
            figures.append(_fig("findings still open", *_n(findings)))
            late = _ids(
                conn,
                f"SELECT id FROM records WHERE kind = 'finding' AND status NOT IN ({CLOSED})"
                " AND due_date < :until ORDER BY id",
                until=last_day,
            )
            figures.append(_fig("findings past their re-check date", *_n(late)))
        out["c.internal-audit"] = figures
        total = sum(a[improvement] for a in audits)
        out["f.improvement"] = (
            [_fig("audit opportunities for improvement", total, [a[0] for a in audits if a[improvement]])]
            if total
            else []
        )

        # c. documents whose periodic review is overdue: the newest effective version's next review date,
        # else (never effective, or no date) the day the first version was registered
        overdue = _ids(
            conn,
            "SELECT 'document:' || d.id FROM documents d WHERE d.active"
            " AND COALESCE((SELECT v.next_review_date FROM document_versions v WHERE v.document_id = d.id"
            "               AND v.status = 'effective' ORDER BY v.id DESC LIMIT 1),"
            "              (SELECT substr(min(v.created_at), 1, 10) FROM document_versions v WHERE v.document_id = d.id))"
            "     < :today ORDER BY d.id",
            today=today.isoformat(),
        )
        out["c.document-reviews"] = [_fig(f"document reviews overdue on {today.isoformat()}", *_n(overdue))]

        # c. release validations by verdict, ai. their group gaps, and the deviations of the quarter
        in_quarter = "created_at >= :a AND created_at < :b"
        releases = conn.execute(
            text(f"SELECT id, status FROM records WHERE kind = 'release' AND {in_quarter} ORDER BY id"),
            {"a": start, "b": end},
        ).all()
        if releases:
            figures = [_fig("release validations", len(releases), [r[0] for r in releases])]
            for status in ("released", "failed", "rejected", "blocked", "awaiting-signature"):
                figures.append(_fig(status.replace("-", " "), *_n([r[0] for r in releases if r[1] == status])))
            out["c.release-validation"] = figures
        else:
            out["c.release-validation"] = []
        gaps = conn.execute(
            text(
                "SELECT r.id, r.title, json_extract(o.value, '$.criterion'), json_extract(o.value, '$.observed.difference'),"
                " json_extract(o.value, '$.passed'), json_type(o.value, '$.reason'), json_extract(o.value, '$.reason')"
                " FROM records r, json_each(r.data, '$.verdict.outcomes') o"
                f" WHERE r.kind = 'release' AND r.{in_quarter.replace(' AND ', ' AND r.')}"
                " AND json_type(o.value, '$.observed.difference') IS NOT NULL ORDER BY r.id, o.key"
            ),
            {"a": start, "b": end},
        ).all()
        out["ai.fairness"] = [
            _fig(
                f"{title}: {criterion} largest group gap",
                difference,
                [rid],
                note="met" if passed else f"failed: {'' if given is None else reason}",
            )
            for rid, title, criterion, difference, passed, given, reason in gaps
        ]
        deviations = _ids(
            conn, f"SELECT id FROM records WHERE kind = 'deviation' AND {in_quarter} ORDER BY id", a=start, b=end
        )
        out["ai.deviations"] = [_fig("deviations (release overrides)", *_n(deviations))] if deviations else []

        # c. approval lead times (days from request to decision) of the requests decided in the quarter
        decided = "decided_at >= :a AND decided_at < :b"
        ids = _ids(conn, f"SELECT id FROM approval_requests WHERE {decided} ORDER BY id", a=start, b=end)
        if ids:
            micros = (
                "((strftime('%s', decided_at) - strftime('%s', created_at)) * 1000000"
                " + CAST(substr(decided_at, 21, 6) AS INTEGER) - CAST(substr(created_at, 21, 6) AS INTEGER))"
            )
            n, median, p90, longest = conn.execute(
                text(
                    f"WITH d AS (SELECT {micros} / 1000000.0 / 86400 AS days FROM approval_requests WHERE {decided}),"
                    " r AS (SELECT days, row_number() OVER (ORDER BY days) - 1 AS i, count(*) OVER () AS n FROM d)"
                    " SELECT max(n), avg(CASE WHEN i IN ((n - 1) / 2, n / 2) THEN days END),"
                    " max(CASE WHEN i = min(n - 1, CAST(0.9 * n AS INTEGER)) THEN days END), max(days) FROM r"
                ),
                {"a": start, "b": end},
            ).one()
            assert n == len(ids)
            out["c.approval-lead-times"] = [
                _fig("approvals decided this quarter", len(ids), ids),
                _fig("median lead time (days)", round(median, 2), ids),
                _fig("90th percentile lead time (days)", round(p90, 2), ids),
                _fig("longest lead time (days)", round(longest, 2), ids),
            ]
        else:
            out["c.approval-lead-times"] = []
    return out


def _n(ids: list[str]) -> tuple[int, list[str]]:
    return len(ids), ids


def same_figures(pack: dict[str, Any], figures: dict[str, list[dict[str, Any]]]) -> int:
    """Assert that the pack and the baseline hold the same figures for every input the baseline computes,
    and that the baseline covers every input a provider gave; returns the number of figures compared."""
    gathered = {i["key"]: i["figures"] for i in pack["inputs"]}
    provided = {key for key, entries in review_inputs._PROVIDERS.items() if entries}
    missing = provided - set(figures)
    assert not missing, f"the baseline does not compute {sorted(missing)}: add them to bench/management_review.py"
    for key, expected in figures.items():
        got = gathered[key]
        if got != expected:
            labels = {f["label"] for f in got} | {f["label"] for f in expected}
            diff = [
                label
                for label in sorted(labels)
                if [f for f in got if f["label"] == label] != [f for f in expected if f["label"] == label]
            ]
            raise AssertionError(f"{key}: the gathered figures and the SQL baseline differ on {diff}")
    return sum(len(v) for v in figures.values())


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path("/tmp/qms-bench-mr-large"), help="compliance repo (SQLite)")
    parser.add_argument("--period", help="the quarter to gather, like 2026Q3 (default: the last completed one)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one gathering")
    args = parser.parse_args(argv)

    os.environ.pop("QMS_DATABASE_URL", None)
    if not (args.repo / "qms.yaml").exists():
        build_demo(args.repo)
    from qmsflow.context import open_context

    ctx = open_context(args.repo / "qms.yaml")
    db, config = ctx.db, ctx.config
    if db.dialect != "sqlite":
        parser.error(f"the SQL baseline is written for SQLite; {db.safe_url} is {db.dialect}")
    as_of = datetime.now(UTC)
    period = Period.parse(args.period) if args.period else reviewed_period(mr.today_in(config, as_of))
    with db.read() as session:
        window = mr.window_for(session, config, period, as_of)
    with db.engine.connect() as conn:
        events = conn.execute(text("SELECT count(*) FROM trail_events")).scalar_one()
        capas = conn.execute(text("SELECT count(*) FROM records WHERE kind = 'capa'")).scalar_one()
        in_quarter = conn.execute(
            text("SELECT count(*) FROM trail_events WHERE ts >= :a AND ts < :b"),
            {"a": _trail_ts(window.start), "b": _trail_ts(window.end)},
        ).scalar_one()
    load = os.getloadavg()
    print(
        f"store: {db.safe_url}; {events:,} trail events, {capas:,} CAPAs; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(
        f"period {period}: [{window.start.isoformat()}, {window.end.isoformat()}), {in_quarter:,} trail events in it;"
        f" as of {as_of.isoformat(timespec='seconds')}"
    )

    compared = same_figures(gather(db, config, period, as_of), baseline(db, window))
    pack = gather(db, config, period, as_of)
    given = sum(len(i["figures"]) for i in pack["inputs"])
    records = sum(len(f["records"]) for i in pack["inputs"] for f in i["figures"])
    print(f"figures: {given} gathered ({records:,} record ids), {compared} compared with the SQL baseline: identical")

    runs: dict[str, Callable[[], object]] = {
        "gather": lambda: gather(db, config, period, as_of),
        'baseline "sql"': lambda: baseline(db, window),
    }
    times = alternate(runs, args.repeat)
    best = {name: min(values) for name, values in times.items()}
    for name, values in times.items():
        shown = ", ".join(f"{v:.3f}" for v in values)
        print(f"{name:16} best {best[name]:7.3f} s   median {statistics.median(values):7.3f} s   (runs: {shown})")
    for name, seconds in sorted(per_provider(db, config, window).items(), key=lambda item: -item[1]):
        print(f"  provider {name:58} {seconds:7.3f} s  (alone: no read shared with another)")
    ratio = best["gather"] / best['baseline "sql"']
    print(f'gather / baseline "sql": {ratio:.2f}')
    print(f"gather best {best['gather']:.3f} s  (goal <= 2 s: {'met' if best['gather'] <= 2 else 'NOT met'})")
    print("command: python bench/management_review.py " + " ".join(argv if argv is not None else sys.argv[1:]))

    if args.profile:
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.runcall(gather, db, config, period, as_of)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
    db.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
