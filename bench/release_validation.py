"""Benchmark of release validation from CI, end to end on the embedded stack.

    python bench/release_validation.py [--cases 10000] [--rounds 3]

Starts `qms up` on a scaffolded repo whose AI system has release criteria, generates a JUnit file of
--cases test cases (pytest's format, with requirement properties) and a metrics file, then alternates, in
the same run and against the same Prefect server:
1. `qms release validate --no-wait` as a CI job runs it (a new process with a personal token): the
   evidence parsed and kept in the records store, the flow run started on the runner, the evidence
   judged, the report rendered (HTML + PDF), the signature request opened; wall time until the command
   exits with 2 (awaiting signature);
2. the baseline: a bare Prefect flow that only parses the same file with junitparser, served by a runner
   polling as often as the stack's (2 s), one run created and waited for until COMPLETED.
Each round submits a new version (fresh evidence). Prints both medians and the ratio (goal <= 1.5).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from identityutil import token  # noqa: E402
from stackutil import QMS, start_stack  # noqa: E402

from qmsflow.scaffold import scaffold  # noqa: E402
from qmsflow.store.db import Database  # noqa: E402

CRITERIA = """    release:
      signers: [chloe, role:quality-lead]
      criteria:
        - id: accuracy
          type: metric
          metric: accuracy
          min: 0.9
        - id: tpr-gap
          type: group_gap
          metric: true_positive_rate
          groups: [female, male]
          max_difference: 0.05
          min_group_size: 100
        - id: unit
          type: pass_rate
          suites: [unit]
          min: 0.95
"""


def junit(cases: int) -> str:
    stamp = datetime.now(UTC).isoformat()
    out = [
        '<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">',
        f'<testsuite name="unit" errors="0" failures="0" skipped="0" tests="{cases}" time="12.5" timestamp="{stamp}">',
    ]
    for i in range(cases):
        out.append(
            f'<testcase classname="tests.unit.test_module_{i // 100}" name="test_case_{i}" time="0.001">'
            f'<properties><property name="requirement" value="REQ-{i % 250}"/></properties></testcase>'
        )
    out.append("</testsuite></testsuites>")
    return "\n".join(out)


def metrics() -> str:
    return (
        '{"produced_at": "%s", "metrics": {"accuracy": 0.93}, "by_group": {"true_positive_rate": '
        '{"female": 0.91, "male": 0.93}, "count": {"female": 1200, "male": 1300}}}' % datetime.now(UTC).isoformat()
    )


BARE = """
import sys
from junitparser import JUnitXml
from prefect import flow


@flow(name="bare-junit-parse", persist_result=True)
def bare_parse(path: str) -> int:
    return sum(1 for suite in JUnitXml.fromfile(path) for _ in suite)


if __name__ == "__main__":
    bare_parse.serve(name="bench", print_starting_message=False)
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qms-bench-release-"))
    repo = work / "repo"
    scaffold(repo, org_name="Bench AI GmbH", git=False)
    config = repo / "qms.yaml"
    anchor = "    placed_on_market: 2026-09-01\n"
    config.write_text(config.read_text().replace(anchor, anchor + CRITERIA, 1))
    (work / "bare_parse.py").write_text(BARE)
    stack = start_stack(repo)  # migrates and syncs: the criteria version is registered now
    db = Database(f"sqlite:///{repo / '.qms' / 'qms.db'}")
    env = {
        **stack.env,
        "PREFECT_API_URL": stack.api_url,
        "PREFECT_API_AUTH_STRING": stack.auth_string,
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
    }
    bare = subprocess.Popen(
        [sys.executable, str(work / "bare_parse.py")],
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    qms_env = {**stack.env, "QMS_TOKEN": token(db, "dev", person="dev")}
    ours, base, size = [], [], 0
    try:
        time.sleep(3)  # the bare runner registers its deployment
        for round_no in range(args.rounds):
            report, metrics_file = work / f"unit-{round_no}.xml", work / f"metrics-{round_no}.json"
            report.write_text(junit(args.cases))
            metrics_file.write_text(metrics())
            size = report.stat().st_size
            start = time.perf_counter()
            done = subprocess.run(
                [
                    QMS,
                    "release",
                    "validate",
                    "-c",
                    str(config),
                    "--system",
                    "triage-assist",
                    "--version",
                    f"1.{round_no}.0",
                    "--junit",
                    str(report),
                    "--metrics",
                    str(metrics_file),
                    "--no-wait",
                    "--timeout",
                    "600",
                ],
                env=qms_env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            ours.append(time.perf_counter() - start)
            if done.returncode != 2:
                print(done.stdout, done.stderr, file=sys.stderr)
                raise SystemExit(f"round {round_no}: qms release validate exited {done.returncode}, not 2")
            start = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "from prefect.deployments import run_deployment;"
                    f"r = run_deployment('bare-junit-parse/bench', parameters={{'path': {str(report)!r}}}, timeout=600);"
                    "assert r.state.is_completed(), r.state",
                ],
                env=env,
                check=True,
                timeout=900,
                capture_output=True,
            )
            base.append(time.perf_counter() - start)
            print(
                f"round {round_no + 1}: qms release validate --no-wait {ours[-1]:.2f} s, bare parse flow {base[-1]:.2f} s"
            )
    finally:
        bare.terminate()
        try:
            bare.wait(timeout=30)
        except subprocess.TimeoutExpired:
            bare.kill()
        stack.stop()
        db.dispose()
    ratio = statistics.median(ours) / statistics.median(base)
    print(f"{args.cases:,} cases ({size / 1e6:.1f} MB JUnit), {args.rounds} rounds")
    print(f"median: validate {statistics.median(ours):.2f} s, bare flow {statistics.median(base):.2f} s")
    print(f"ratio {ratio:.2f} (goal <= 1.5)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DO_NOT_TRACK", "1")
    sys.exit(main())
