"""Benchmark of the audit trail: `qms verify` (chain, witnesses, record states) next to read-and-hash baselines.

    python bench/trail.py [--events 1000000] [--batch 10000]      # a fresh store of N synthetic events
    python bench/trail.py --repo DIR [--repeat 2]                # an existing repo, e.g. `qms demo --scale large DIR`

Everything is measured in this one process, side by side, ``--repeat`` times in alternating order
(the best of each is reported, as the least disturbed by other load on the machine):

- bare read: every stored event ``(seq, canonical, hash)``, nothing else;
- baseline "rows": every column of every trail row read, and its text fields SHA-256-hashed in one
  Python loop (the baseline the goal is stated against);
- baseline "floor": the stored events read and each canonical form SHA-256-hashed (the least any
  verification of the chain has to do);
- verify: the whole of ``services.verify.verify`` (triggers, chain, earlier heads and anchors,
  every record table against the trail, signed content, the outcome recorded), and its parts.

Goal (docs/adr/0011): verify including the state check <= 1.5 x baseline "rows" on the 1M-event large demo.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.timing import alternate  # noqa: E402
from qmsflow.domain.trail import verify_chain  # noqa: E402
from qmsflow.services.verify import check_signed_content, verify  # noqa: E402
from qmsflow.store import Database, UnitOfWork, trail  # noqa: E402
from qmsflow.store.state import check_states  # noqa: E402


def _cursor(db: Database, sql: str):  # noqa: ANN202
    """Stream rows from the DBAPI cursor, as ``trail.iter_rows`` does."""
    conn = db.engine.raw_connection()
    cursor = conn.cursor(name="bench") if db.dialect == "postgresql" else conn.cursor()
    cursor.execute(sql)
    try:
        while rows := cursor.fetchmany(20_000):
            yield from rows
    finally:
        cursor.close()
        conn.close()


def bare_read(db: Database) -> int:
    n = 0
    for _ in _cursor(db, "SELECT seq, canonical, hash FROM trail_events ORDER BY seq"):
        n += 1
    return n


def baseline_rows(db: Database) -> int:
    sha256, n = hashlib.sha256, 0
    sql = "SELECT seq, ts, actor, action, record, canonical, prev_hash, hash FROM trail_events ORDER BY seq"
    for seq, ts, actor, action, record, canonical, prev_hash, digest in _cursor(db, sql):
        sha256("\x1f".join((str(seq), ts, actor, action, record, canonical, prev_hash, digest)).encode()).hexdigest()
        n += 1
    return n


def baseline_floor(db: Database) -> int:
    sha256, n = hashlib.sha256, 0
    for _seq, canonical, _digest in _cursor(db, "SELECT seq, canonical, hash FROM trail_events ORDER BY seq"):
        sha256(canonical.encode("utf-8")).hexdigest()
        n += 1
    return n


def verify_all(db: Database, anchors: Path | None, root: Path | None) -> int:
    result = verify(db, anchors, root=root)
    assert result.ok, result.problem
    return result.report.count


def parts(db: Database) -> dict[str, float]:
    """The time of the chain loop and of the state check, each on its own."""
    with db.read() as session:
        t0 = time.perf_counter()
        report, replay = verify_chain(trail.iter_rows(session))
        t1 = time.perf_counter()
        state = check_states(session, replay)
        t2 = time.perf_counter()
        check_signed_content(session)
        t3 = time.perf_counter()
    assert report.ok and not state.total
    return {"chain": t1 - t0, "state": t2 - t1, "signed content": t3 - t2, "rows": state.rows}


def synthetic(url: str, events: int, batch: int) -> tuple[Database, float]:
    db = Database(url)
    db.upgrade()
    t0 = time.perf_counter()
    done = 0
    while done < events:
        n = min(batch, events - done)
        with UnitOfWork(db, "bench") as uow:
            for i in range(done, done + n):
                uow.record(
                    "bench.changed",
                    f"bench:{i % 100000:05d}",  # a ref no record table holds
                    {"status": "open", "owner": "ana", "n": i},
                    {"status": "containment", "owner": "ana", "n": i},
                )
            uow.commit()
        done += n
        if done % (batch * 20) == 0:
            print(f"  appended {done:,}", file=sys.stderr)
    return db, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, help="a compliance repo whose store to measure (e.g. the large demo)")
    parser.add_argument("--events", type=int, default=1_000_000, help="synthetic events when no --repo is given")
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cli", action="store_true", help="also time the `qms verify` command end to end")
    args = parser.parse_args()

    anchors = root = None
    if args.repo:
        from qmsflow.context import open_context

        ctx = open_context(args.repo / "qms.yaml")
        db, anchors, root, append_s = ctx.db, ctx.anchors_file, ctx.root, None
    else:
        workdir = Path(tempfile.mkdtemp(prefix="qms-bench-"))
        url = os.environ.get("QMS_DATABASE_URL") or f"sqlite:///{workdir / 'qms.db'}"
        db, append_s = synthetic(url, args.events, args.batch)
    with db.read() as session:
        count = trail.count(session)
    load = os.getloadavg()
    print(f"store: {db.safe_url}; {count:,} events; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

    runs: dict[str, Callable[[], object]] = {
        "bare read": lambda: bare_read(db),
        'baseline "rows"': lambda: baseline_rows(db),
        'baseline "floor"': lambda: baseline_floor(db),
        "verify": lambda: verify_all(db, anchors, root),
    }
    times = alternate(runs, args.repeat)
    split = parts(db)
    best = {name: min(values) for name, values in times.items()}
    for name, values in times.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name:18} best {best[name]:7.2f} s   {count / best[name]:>12,.0f} events/s   (runs: {shown})")
    print(
        f"  of which: chain {split['chain']:.2f} s, record states {split['state']:.2f} s "
        f"({split['rows']:,} rows), signed content {split['signed content']:.2f} s"
    )
    ratio = best["verify"] / best['baseline "rows"']
    print(f'verify / baseline "rows":  {ratio:.2f}  (goal <= 1.5: {"met" if ratio <= 1.5 else "NOT met"})')
    floor = best['baseline "floor"']
    print(f'verify / baseline "floor": {best["verify"] / floor:.2f}')
    print(f"verify / bare read:        {best['verify'] / best['bare read']:.2f}")
    median = statistics.median(times["verify"])
    print(f"verify median of {args.repeat}: {median:.2f} s")
    if append_s is not None:
        print(f"append: {append_s:.2f} s  {count / append_s:,.0f} events/s")

    if args.cli:
        qms = str(Path(sys.executable).parent / "qms")
        if args.repo:
            command, env = [qms, "verify", "-c", str(args.repo / "qms.yaml")], dict(os.environ)
        else:
            repo = Path(tempfile.mkdtemp(prefix="qms-bench-repo-"))
            env = {**os.environ, "QMS_DATABASE_URL": url}  # init anchors the bench store's head
            subprocess.run([qms, "init", str(repo / "r"), "--no-git"], check=True, capture_output=True, env=env)
            command = [qms, "verify", "-c", str(repo / "r" / "qms.yaml")]
        t0 = time.perf_counter()
        out = subprocess.run(command, env=env, capture_output=True, text=True)
        cli_s = time.perf_counter() - t0
        print(f"qms verify (whole command, incl. start-up): {cli_s:.2f} s, exit {out.returncode}")
        print("  " + (out.stdout.strip().splitlines() or out.stderr.strip().splitlines() or [""])[0])
    db.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
