"""``qms init``: scaffold a working compliance repo from the bundled templates."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .domain.approvals import describe_rule
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


def document_context(config: QmsConfig, doc_id: str) -> dict:
    """What a procedure template may use (see templates/documents/)."""
    doc = config.document(doc_id)
    process = next((p for p in config.processes if p.procedure == doc_id), None)
    people = {p.id: p for p in config.people}
    return {
        "org": config.organisation,
        "doc": {
            "id": doc.id,
            "title": doc.title,
            "owner": people[doc.owner],
            "approvers": config.approvers_of(doc),
            "review_interval_months": doc.review_interval_months,
            "required_signatures": doc.required_signatures,
            "rule": describe_rule(doc.required_signatures),
        },
        "process": {
            "key": process.key,
            "title": process.title,
            "owner": people[process.owner],
            "aspects": list(process.aspects),
            "required_signatures": process.required_signatures,
            "rule": describe_rule(process.required_signatures),
        }
        if process
        else {
            "key": "-",
            "title": "-",
            "owner": people[doc.owner],
            "aspects": [],
            "required_signatures": "all",
            "rule": describe_rule("all"),
        },
        "approvals": config.approvals,
        "aspects": ASPECTS,
        "systems": config.systems,
        "retention_years": config.retention.years,
        "documents": {d.id: d for d in config.documents},
    }


def render_document(config: QmsConfig, doc_id: str) -> str:
    return environment().get_template(f"documents/{doc_id}.md.j2").render(**document_context(config, doc_id))


def scaffold(
    target: Path,
    org_name: str = "Example AI GmbH",
    force: bool = False,
    git: bool = True,
    trusted_single_user: bool = False,
) -> ScaffoldReport:
    """Write qms.yaml, the ten procedures, docs/adr and a .gitignore into ``target``.

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
