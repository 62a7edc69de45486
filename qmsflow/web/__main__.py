"""``python -m qmsflow.web``: the web app process that ``qms up`` starts (QMS_CONFIG names the repo)."""

from __future__ import annotations

import argparse
import os
import sys


def main() -> int:
    import uvicorn

    from ..context import open_context
    from ..settings import ConfigError
    from ..store.db import StoreError
    from .app import create_app

    parser = argparse.ArgumentParser(prog="python -m qmsflow.web")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    try:
        ctx = open_context(os.environ.get("QMS_CONFIG"))
    except (ConfigError, StoreError) as exc:
        print(f"qms web: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(ctx), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
