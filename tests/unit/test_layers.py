"""The dependency direction, checked on every import (absolute, relative, inside functions too).

deployments -> flows -> tasks -> services -> (domain, store, adapters); web and CLI -> services;
the domain imports nothing of ours and no SQL, Prefect or HTTP library; ``qmsflow`` never imports
flows, tasks or deployments; the entry points (web, CLI) never touch ``store.tables``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("qmsflow", "flows", "tasks", "deployments")
OUTER = ("flows", "tasks", "deployments")
LIBRARIES = ("sqlalchemy", "prefect", "httpx", "requests", "fastapi", "starlette", "slack_sdk", "jira", "alembic")

# (importing package, forbidden module prefixes, allowed exceptions)
RULES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("qmsflow.domain", ("qmsflow", *OUTER, *LIBRARIES, "psycopg"), ("qmsflow.domain",)),
    ("qmsflow", OUTER, ()),
    ("qmsflow.store", ("qmsflow.services", "qmsflow.web", "qmsflow.cli", "qmsflow.adapters"), ()),
    ("qmsflow.adapters", ("qmsflow.services", "qmsflow.web", "qmsflow.cli", "qmsflow.store"), ()),
    ("qmsflow.services", ("qmsflow.web", "qmsflow.cli", "qmsflow.demo"), ()),
    ("qmsflow.web", ("qmsflow.cli", "qmsflow.store.tables"), ()),
    ("qmsflow.cli", ("qmsflow.store.tables",), ()),
    ("tasks", ("flows", "deployments", "qmsflow.web", "qmsflow.cli", "qmsflow.store.tables"), ()),
    ("flows", ("deployments", "qmsflow"), ()),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module the file imports, relative imports resolved against its package."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from . import tables` / `from ..store import tables` name modules too
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(files: list[Path]) -> list[str]:
    out = []
    for path in files:
        module = module_name(path)
        for package, forbidden, allowed in RULES:
            if not _within(module, package):
                continue
            for line, target in imports_of(path):
                if any(_within(target, a) for a in allowed):
                    continue
                if any(_within(target, f) for f in forbidden):
                    out.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {target} ({package} may not)")
    return sorted(set(out))


def source_files() -> list[Path]:
    return [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]


def test_the_code_base_keeps_the_dependency_direction() -> None:
    assert violations(source_files()) == []


@pytest.mark.parametrize(
    ("where", "code"),
    [
        ("qmsflow/domain/x.py", "from ..store.tables import RecordRow\n"),
        ("qmsflow/domain/x.py", "def f():\n    from qmsflow.services import capa\n"),
        ("qmsflow/domain/x.py", "import sqlalchemy\n"),
        ("qmsflow/services/x.py", "from ..web import app\n"),
        ("qmsflow/services/x.py", "from .. import cli\n"),
        ("qmsflow/cli/x.py", "from ..store.tables import RecordRow\n"),
        ("qmsflow/cli/x.py", "from ..store import tables\n"),
        ("qmsflow/web/pages/x.py", "from ...store.tables import RecordRow\n"),
        ("qmsflow/x.py", "import deployments\n"),
        ("qmsflow/x.py", "import importlib\nimportlib.import_module('flows.capa')\n"),
        ("tasks/x.py", "from flows import capa\n"),
    ],
)
def test_a_forbidden_import_is_caught(tmp_path: Path, where: str, code: str) -> None:
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        path = tmp_path / where
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)
        assert violations([path]), code
    finally:
        ROOT = saved


def test_allowed_imports_pass(tmp_path: Path) -> None:
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        files = {
            "qmsflow/domain/x.py": "from .records import is_overdue\nfrom pydantic import BaseModel\n",
            "qmsflow/services/x.py": "from ..store.tables import RecordRow\nfrom ..domain import capa\n",
            "qmsflow/cli/x.py": "from ..services import queries\nfrom ..store.uow import UnitOfWork\n",
            "tasks/x.py": "from qmsflow.services import capa\n",
        }
        paths = []
        for where, code in files.items():
            path = tmp_path / where
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(code)
            paths.append(path)
        assert violations(paths) == []
    finally:
        ROOT = saved
