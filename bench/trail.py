"""Benchmark of the audit trail: append N events, then verify the chain, on SQLite (or QMS_DATABASE_URL).

    python bench/trail.py [--events 1000000] [--batch 10000]

Prints events/s for append and for verify next to a baseline measured in the same process:
SHA-256 over the same canonical payloads alone (no database, no canonicalisation). The goal is
verify at >= 200,000 events/s on SQLite (1M events in <= 5 s).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qmsflow.domain.trail import canonical_event  # noqa: E402
from qmsflow.services.verify import verify  # noqa: E402
from qmsflow.store import Database, UnitOfWork, trail  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--cli", action="store_true", help="also time the `qms verify` command end to end")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="qms-bench-"))
    url = os.environ.get("QMS_DATABASE_URL") or f"sqlite:///{workdir / 'qms.db'}"
    db = Database(url)
    db.upgrade()
    print(f"store: {db.safe_url}; {args.events:,} events in transactions of {args.batch:,}")

    t0 = time.perf_counter()
    done = 0
    while done < args.events:
        n = min(args.batch, args.events - done)
        with UnitOfWork(db, "bench") as uow:
            for i in range(done, done + n):
                uow.record(
                    "capa.updated",
                    f"record:CAPA-2026-{i % 100000:05d}",
                    {"status": "open", "owner": "ana", "n": i},
                    {"status": "containment", "owner": "ana", "n": i},
                )
            uow.commit()
        done += n
        if done % (args.batch * 20) == 0:
            print(f"  appended {done:,}", file=sys.stderr)
    append_s = time.perf_counter() - t0

    # baseline: hash the same canonical payloads, already in memory, nothing else
    with db.read() as session:
        payloads = [canonical_event(*row[:8]) for row in trail.iter_rows(session)]
    sha256 = hashlib.sha256
    t0 = time.perf_counter()
    for payload in payloads:
        sha256(payload).hexdigest()
    hash_s = time.perf_counter() - t0
    del payloads

    t0 = time.perf_counter()
    result = verify(db, None)
    verify_s = time.perf_counter() - t0
    assert result.ok and result.report.count == args.events, result.problem

    rate = lambda seconds: args.events / seconds  # noqa: E731
    print(
        f"append:   {append_s:8.2f} s  {rate(append_s):>12,.0f} events/s  ({hash_s / append_s:.3f} of baseline speed)"
    )
    print(
        f"verify:   {verify_s:8.2f} s  {rate(verify_s):>12,.0f} events/s  ({hash_s / verify_s:.3f} of baseline speed)"
    )
    print(f"baseline: {hash_s:8.2f} s  {rate(hash_s):>12,.0f} payloads/s (SHA-256 of the canonical payloads alone)")
    print(f"verify goal >= 200,000 events/s: {'met' if rate(verify_s) >= 200_000 else 'NOT met'}")

    if args.cli:
        config = workdir / "repo"
        subprocess.run(
            [str(Path(sys.executable).parent / "qms"), "init", str(config), "--no-git"], check=True, capture_output=True
        )
        env = {**os.environ, "QMS_DATABASE_URL": url}
        t0 = time.perf_counter()
        out = subprocess.run(
            [str(Path(sys.executable).parent / "qms"), "verify", "-c", str(config / "qms.yaml")],
            env=env,
            capture_output=True,
            text=True,
        )
        cli_s = time.perf_counter() - t0
        print(f"qms verify (whole command, incl. start-up): {cli_s:.2f} s  {rate(cli_s):,.0f} events/s")
        print("  " + out.stdout.strip().splitlines()[0])
    db.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
