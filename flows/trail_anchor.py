"""Anchors the audit trail's head in the compliance repo every hour: git witnesses the trail.

Appends the head (seq, hash, time) to the anchors file and commits it when the repo is a git repo,
so that at most one interval of events is ever unwitnessed: ``qms verify`` checks every anchor git
ever committed. A commit that fails (e.g. no git identity) fails the run, visibly.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from tasks.trail import anchor_trail_task

FLOW_NAME = "trail-anchor"


@flow(name=FLOW_NAME, description=__doc__, log_prints=False)
def trail_anchor() -> dict:
    logger = get_run_logger()
    done = anchor_trail_task()
    if done["git_repo"] and not done["commit"]:
        raise RuntimeError(f"anchored seq {done['seq']} but could not commit the anchors file to git")
    if done["seq"]:
        logger.info(
            "trail head seq %s anchored%s", done["seq"], f" in commit {done['commit']}" if done["commit"] else ""
        )
    return done
