"""The domain imports nothing of ours and no SQL, Prefect or HTTP library."""

from __future__ import annotations

import ast
from pathlib import Path

import qmsflow.domain

FORBIDDEN = (
    "sqlalchemy",
    "prefect",
    "httpx",
    "requests",
    "fastapi",
    "starlette",
    "slack_sdk",
    "jira",
    "alembic",
    "psycopg",
    "qmsflow",
    "flows",
    "tasks",
    "deployments",
)


def test_domain_imports_are_pure() -> None:
    offenders = []
    for path in Path(qmsflow.domain.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
