"""Tasks over the audit trail."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from qmsflow.context import open_context
from qmsflow.services.verify import anchor


@task(name="anchor-trail", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def anchor_trail_task() -> dict[str, Any]:
    """Append the trail's head to the anchors file and commit it (git repo).

    Takes no parameters: the compliance repo is the worker's own (QMS_CONFIG, as ``qms up`` sets it),
    never one named by whoever starts the run.
    """
    with open_context(None) as ctx:
        try:
            done = anchor(ctx.db, ctx.anchors_file, ctx.root)
        except ValueError:  # an empty trail: nothing to witness yet
            return {"seq": 0, "written": False, "commit": None, "git_repo": None}
        return {
            "seq": done.anchor.seq,
            "hash": done.anchor.hash,
            "written": done.written,
            "commit": done.commit,
            "git_repo": done.git_repo,
        }
