"""``qms init``: scaffold a working compliance repo from the bundled templates."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .domain.aspects import ASPECTS
from .domain.organisation import QmsConfig
from .paths import templates_dir
from .settings import CONFIG_NAME, parse_config

# the author of the scaffold commit: qmsflow itself, not a person (never an author of a later change)
SCAFFOLD_AUTHOR = ("qmsflow", "qmsflow@localhost")


class ScaffoldError(Exception):
    pass


@dataclass
class ScaffoldReport:
    root: Path
    written: list[Path] = field(default_factory=list)
    git_initialised: bool = False


def environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(templates_dir())),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _ph(name: str) -> str:
    """A placeholder filled from qms.yaml when a copy is made (domain.procedure_text)."""
    return "{{qms:" + name + "}}"


class _Named(str):
    """A placeholder that templates may also use as a person (``.name``)."""

    @property
    def name(self) -> str:
        return str(self)


# marks around a capability statement in a checking render (tests: every qmsflow sentence is declared)
CLAIM_OPEN, CLAIM_CLOSE = "\u27e6", "\u27e7"
MANUAL = "Manual step (outside qmsflow):"


def load_capabilities() -> dict:
    """Import every module that may declare a capability (domain, services, cli, web) and return them all."""
    import importlib
    import pkgutil

    from . import cli, domain, services, web
    from .domain import capabilities

    for package in (domain, services, cli, web):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.endswith("__main__"):
                importlib.import_module(info.name)
    return capabilities.declared()


def document_context(config: QmsConfig, doc_id: str, mark: bool = False) -> dict:
    """What a procedure template may use (see templates/documents/).

    Organisation-specific values are placeholders (``{{qms:…}}``), filled from qms.yaml whenever a copy
    is made, so the procedure file never holds names that go stale. ``qmsflow_does(name)`` prints the
    statement of a declared capability (an unknown name fails the rendering); ``manual(text)`` marks a
    step that qmsflow does not do. ``mark`` wraps each statement in CLAIM_OPEN/CLAIM_CLOSE (for tests).
    """
    from .domain import capabilities

    config.document(doc_id)  # KeyError for an unknown document, as before
    load_capabilities()

    def qmsflow_does(name: str) -> str:
        statement = capabilities.get(name).statement
        return f"{CLAIM_OPEN}{statement}{CLAIM_CLOSE}" if mark else statement

    def qmsflow_keeps(name: str) -> str:
        """For a table cell: "qmsflow", backed by the declared capability ``name``."""
        capabilities.get(name)
        return f"{CLAIM_OPEN}qmsflow{CLAIM_CLOSE}" if mark else "qmsflow"

    def manual(text: str) -> str:
        return f"{MANUAL} {' '.join(text.split())}"

    return {
        "org": {"name": _ph("org.name"), "timezone": _ph("org.timezone")},
        "doc": {
            "id": doc_id,
            "title": _ph("doc.title"),
            "owner": _Named(_ph("doc.owner")),
            "approvers": _ph("doc.approvers"),
            "review_interval_months": _ph("doc.review_interval_months"),
            "rule": _ph("doc.signature_rule"),
        },
        "process": {
            "key": _ph("process.key"),
            "title": _ph("process.title"),
            "owner": _Named(_ph("process.owner")),
            "signers": _ph("process.signers"),
            "rule": _ph("process.signature_rule"),
            "aspects": _ph("process.aspects"),
        },
        "systems": _ph("systems"),
        "retention_years": _ph("retention.years"),
        "review_schedule": _ph("management_review.schedule"),
        "slack_signing": _ph("approvals.slack_signing"),
        "document": lambda ref: _ph(f"document {ref}"),
        "aspects": ASPECTS,
        "qmsflow_does": qmsflow_does,
        "qmsflow_keeps": qmsflow_keeps,
        "manual": manual,
    }


def render_document(config: QmsConfig, doc_id: str, mark: bool = False) -> str:
    """The procedure file ``qms init`` writes: fixed text, declared capabilities, placeholders."""
    context = document_context(config, doc_id, mark)
    return environment().get_template(f"documents/{doc_id}.md.j2").render(**context)


def fill_document(config: QmsConfig, doc_id: str, text: str, source: str) -> str:
    """A procedure's text with its placeholders filled from ``config`` (PlaceholderError: file:line)."""
    from .domain import procedure_text

    return procedure_text.fill(text, procedure_text.values(config, doc_id), source)


def scaffold(
    target: Path,
    org_name: str = "Example AI GmbH",
    force: bool = False,
    git: bool = True,
    trusted_single_user: bool = False,
) -> ScaffoldReport:
    """Write qms.yaml, the ten procedures and the risk register, docs/adr and a .gitignore into ``target``.

    ``trusted_single_user`` (``qms demo``) writes ``security.trusted_single_user: true``.
    """
    target = target.resolve()
    config_path = target / CONFIG_NAME
    if config_path.exists() and not force:
        raise ScaffoldError(f"{config_path} already exists: not overwriting it (use --force to overwrite)")
    env = environment()
    report = ScaffoldReport(target)
    text = env.get_template("scaffold/qms.yaml.j2").render(org_name=org_name, trusted_single_user=trusted_single_user)
    loaded = parse_config(text, config_path)  # the sample must itself be valid

    def write(rel: str, content: str) -> None:
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        report.written.append(path)

    write(CONFIG_NAME, text)
    for doc in loaded.config.documents:
        write(doc.path, render_document(loaded.config, doc.id))
    write("docs/adr/0000-adr-template.md", env.get_template("scaffold/adr-template.md").render())
    write("docs/adr/README.md", env.get_template("scaffold/adr-readme.md").render())
    write("README.md", env.get_template("scaffold/README.md.j2").render(org_name=org_name))
    gitignore = target / ".gitignore"
    if not gitignore.exists():
        write(".gitignore", env.get_template("scaffold/gitignore").render())
    if git:
        report.git_initialised = _git_init(target)
    return report


def _git_init(target: Path) -> bool:
    """Make the compliance repo a git repo with a first commit, unless it already is in one."""

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(target), *args], capture_output=True, text=True)

    try:
        if run("rev-parse", "--is-inside-work-tree").returncode == 0:
            return False
        if run("init", "-q").returncode != 0:
            return False
    except OSError:
        return False
    run("add", "-A")
    run(
        "-c",
        f"user.name={SCAFFOLD_AUTHOR[0]}",
        "-c",
        f"user.email={SCAFFOLD_AUTHOR[1]}",
        "commit",
        "-q",
        "-m",
        "Scaffold the QMS with qmsflow",
    )
    return True
