"""The runner process of ``qms up``: serves every deployment under ``deployments/``.

Started by ``qms up`` with QMS_CONFIG and PREFECT_API_URL set. Deployments use module-path
entrypoints (``flows.document_review_scan.document_review_due_scan``), so flow runs import the
installed code wherever the runner was started.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    from prefect import serve

    import deployments  # this package: the runner is the deployments' entry point
    from qmsflow.settings import ConfigError, load_config

    try:
        loaded = load_config(os.environ.get("QMS_CONFIG"))
    except ConfigError as exc:
        print(f"qms runner: {exc}", file=sys.stderr)
        return 2
    schedules = deployments.schedules_of(loaded.config)
    from qmsflow.adapters import jira, slack

    enabled = frozenset(
        name for name, on in (("slack", slack.settings(loaded.config)), ("jira", jira.settings(loaded.config))) if on
    )
    built = deployments.build(schedules, enabled, loaded.config.organisation.timezone)
    # tell `qms up` which deployments to wait for before it reports the stack as up
    manifest = loaded.state_dir / "runner-deployments.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps([f"{d.flow_name}/{d.name}" for d in built]))
    os.environ["QMS_RUNNER_PID"] = str(os.getpid())  # its flow-run processes die with it (flows/__init__.py)
    serve(*built, pause_on_shutdown=False, print_starting_message=True, limit=loaded.config.stack.max_flow_runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
