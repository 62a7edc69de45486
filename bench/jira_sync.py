"""Benchmark of the Jira synchronisation: 1,000 CAPAs created, then 10 updated, then a quiet cycle.

    python bench/jira_sync.py [--capas 1000] [--updates 10]

Runs the real `jira` client against the fake Jira on 127.0.0.1 (tests/fakes/jira.py) and prints, per
phase, the Jira calls (counted by the fake) and the time. Goals: a cycle with no change makes at
most one call; k changes make at most k + 1 calls (one transitions lookup per delivery pass); a
create costs two (the issue, its remote link); stage changes that keep the Jira status cost none;
stage changes queued while Jira was down are coalesced into one transition per CAPA; a status
mistake in qms.yaml costs two reads per message and attempt (the issue's transitions and status)
until fixed, and the fix delivers the queued messages in the next pass.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fakes.jira import FakeJira  # noqa: E402

from qmsflow.adapters import jira  # noqa: E402
from qmsflow.context import open_context  # noqa: E402
from qmsflow.domain.approvals import Decision, Method  # noqa: E402
from qmsflow.scaffold import scaffold  # noqa: E402
from qmsflow.services import approvals, capa, jira_sync  # noqa: E402
from qmsflow.services.delivery import deliver  # noqa: E402
from qmsflow.services.sync import sync_config  # noqa: E402
from qmsflow.store import UnitOfWork  # noqa: E402

ROOT_CAUSE = {
    "method": "5 whys",
    "cause": "label drift",
    "similar_cases": {"checked": True, "scope": "all datasets", "found": []},
}
ACTIONS = [{"what": "Add a label audit", "owner": "dev", "due": "2027-01-31"}]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capas", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=10)
    args = parser.parse_args()
    repo = Path(tempfile.mkdtemp(prefix="qms-bench-jira-")) / "repo"
    scaffold(repo, git=False)
    with FakeJira() as fake:
        config = repo / "qms.yaml"
        config.write_text(
            config.read_text().replace(
                "retention:", f"integrations:\n  jira: {{url: '{fake.url}', project: QMS}}\nretention:", 1
            )
        )
        os.environ.update({"JIRA_EMAIL": "qms@example.com", "JIRA_API_TOKEN": "jira-token"})
        os.environ.pop("QMS_DATABASE_URL", None)
        os.environ.pop("SLACK_BOT_TOKEN", None)
        ctx = open_context(config, migrate=True)
        with UnitOfWork(ctx.db, "qmsflow") as uow:
            sync_config(uow, ctx.config, ctx.root)
            uow.commit()

        def reopen(old):  # noqa: ANN001, ANN202 - qms.yaml changed: what a restarted deliverer reads
            old.close()
            return open_context(config)

        ids = []
        with UnitOfWork(ctx.db, "dev") as uow:
            for n in range(args.capas):
                ids.append(capa.open_capa(uow, ctx.config, title=f"Bench CAPA {n}", source="other", owner="dev").id)
            uow.commit()

        def phase(label: str, work) -> None:  # noqa: ANN001
            before = len(fake.calls)
            start = time.perf_counter()
            result = work()
            elapsed = time.perf_counter() - start
            print(f"{label:44} {len(fake.calls) - before:6} calls {elapsed:8.2f} s   {result}")

        settings = jira.settings(ctx.config)
        phase(f"deliver {args.capas} creates", lambda: f"sent {len(deliver(ctx.db, ctx.config).sent)}")
        with UnitOfWork(ctx.db, "dev") as uow:
            for capa_id in ids[: args.updates]:
                capa.advance(uow, ctx.config, capa_id, "containment", {"correction": "contained"})
            uow.commit()
        phase(
            f"deliver {args.updates} updates (stage changes)", lambda: f"sent {len(deliver(ctx.db, ctx.config).sent)}"
        )
        with UnitOfWork(ctx.db, "dev") as uow:
            for capa_id in ids[: args.updates]:
                capa.advance(uow, ctx.config, capa_id, "root_cause", ROOT_CAUSE)
            uow.commit()
        phase(
            f"deliver {args.updates} updates keeping the status",
            lambda: f"sent {len(deliver(ctx.db, ctx.config).sent)}",
        )
        batch = ids[args.updates : 2 * args.updates]
        with UnitOfWork(ctx.db, "dev") as uow:  # queued while Jira was down: three stages each
            for capa_id in batch:
                capa.advance(uow, ctx.config, capa_id, "containment", {"correction": "contained"})
                capa.advance(uow, ctx.config, capa_id, "root_cause", ROOT_CAUSE)
            uow.commit()
        phase(
            f"deliver {len(batch)} CAPAs x 2 queued stage changes",
            lambda: f"sent {len(deliver(ctx.db, ctx.config).sent)} (coalesced)",
        )
        mistake = config.read_text()
        config.write_text(mistake.replace("project: QMS}", "project: QMS, statuses: {action_plan: Planned}}", 1))
        ctx = reopen(ctx)
        for capa_id in batch:  # the action plan is signed (not measured here)
            with UnitOfWork(ctx.db, "dev") as uow:
                request = capa.advance(uow, ctx.config, capa_id, "action_plan", {"actions": ACTIONS})["awaiting"]
                uow.commit()
            with UnitOfWork(ctx.db, "ana") as uow:
                approvals.decide(uow, ctx.config, request, "ana", Decision.APPROVE, None, Method.CLI, claimed="ana")
        phase(
            f"deliver {len(batch)} to a status Jira lacks",
            lambda: f"failed {len(deliver(ctx.db, ctx.config).failed)} (statuses.action_plan: Planned)",
        )
        config.write_text(mistake)
        ctx = reopen(ctx)
        phase("deliver after fixing qms.yaml", lambda: f"sent {len(deliver(ctx.db, ctx.config).sent)}")
        adapter = jira.JiraAdapter(jira.make_client(settings), settings)
        # cycles run every minute; simulate their clock so the quiet cycle is one with no change in its window
        later = datetime.now(UTC) + timedelta(minutes=3)
        phase(
            "reconcile: first cycle (sees our own changes)",
            lambda: jira_sync.reconcile(ctx, adapter, now=later).outcomes or "no change to apply",
        )
        phase("deliver with nothing queued", lambda: f"sent {len(deliver(ctx.db, ctx.config).sent)}")
        phase(
            "reconcile: next cycle, nothing changed",
            lambda: jira_sync.reconcile(ctx, adapter, now=later + timedelta(minutes=1)).outcomes or "no change",
        )
        print(
            f"issues in Jira: {len(fake.issues)} for {args.capas} CAPAs (duplicates: {len(fake.issues) - args.capas})"
        )
        ctx.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
