"""``python -m qmsflow.web``: the web app process that ``qms up`` starts (QMS_CONFIG names the repo).

``--workers N`` (production, behind a reverse proxy): N uvicorn worker processes, each with its own
pooled connections to the records store, so requests use every core (docs/operations.md).
"""

from __future__ import annotations

import argparse
import os
import sys


def factory():  # noqa: ANN201
    """The app of the repo QMS_CONFIG names: what each uvicorn worker process builds."""
    from ..context import open_context
    from .app import create_app

    return create_app(open_context(os.environ.get("QMS_CONFIG")))


def main() -> int:
    import uvicorn

    from ..context import open_context
    from ..settings import ConfigError
    from ..store.db import StoreError
    from .app import create_app

    parser = argparse.ArgumentParser(prog="python -m qmsflow.web")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, choices=range(1, 65), metavar="N (1-64)")
    args = parser.parse_args()
    try:
        ctx = open_context(os.environ.get("QMS_CONFIG"))
    except (ConfigError, StoreError) as exc:
        print(f"qms web: {exc}", file=sys.stderr)
        return 2
    if args.workers > 1:  # each worker process opens the store itself (checked once above)
        ctx.close()
        uvicorn.run(
            "qmsflow.web.__main__:factory",
            factory=True,
            workers=args.workers,
            host=args.host,
            port=args.port,
            log_level="info",
        )
        return 0
    uvicorn.run(create_app(ctx), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
