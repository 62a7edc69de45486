"""The organisation-specific parts of a procedure, filled from qms.yaml when a copy is made.

A procedure file in the compliance repo holds its organisation-specific parts (the organisation, the
document's owner and approvers, the process, the AI systems, the signature rules, retention, the
management review's schedule) as placeholders such as ``{{qms:process.owner}}``. They are filled from
the qms.yaml in force whenever a controlled copy is rendered or the dashboard shows the procedure, so a
procedure never states stale names: qms.yaml is itself under change control (git, ``qms sync``), and
the controlled copy names the qms.yaml digest it was filled from.

Placeholders are a fixed vocabulary replaced by a regular expression, not a template language: the
text of a procedure is never executed. An unknown placeholder is an error naming the file and line.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from .approvals import describe_rule
from .aspects import ASPECTS
from .organisation import ControlledDocument, Process, QmsConfig

PLACEHOLDER = re.compile(r"\{\{\s*qms:([a-z_.]+)(?:\s+([A-Za-z0-9_.-]+))?\s*\}\}")


class PlaceholderError(ValueError):
    """A procedure uses a placeholder that qmsflow does not know, or one that needs an argument."""


def _signers(rule: object) -> str:
    if rule == "all":
        return "every one"
    return "one" if rule == 1 else str(rule)


def _schedule(config: QmsConfig) -> str:
    mr = config.management_review
    tz = config.organisation.timezone
    if mr.schedule == "first-working-day":
        return (
            "on the first working day of each calendar quarter (weekends and the non-working days listed in "
            f"qms.yaml excepted), at 07:00 {tz}, for the quarter just ended"
        )
    return f"on the schedule `{mr.schedule}` (cron, {tz})"


def _systems(config: QmsConfig) -> str:
    if not config.systems:
        return "- No AI system is registered in qms.yaml yet; the procedure then applies to the QMS only."
    lines = []
    for s in config.systems:
        area = f", Annex III area: {s.annex_iii_area}" if s.annex_iii_area else ""
        purpose = " ".join(s.intended_purpose.split())
        lines.append(f"- **{s.name}** (`{s.id}`), risk class: {s.risk_class}{area}. Intended purpose: {purpose}")
    return "\n".join(lines)


def _names(people: list) -> str:  # noqa: ANN001
    return ", ".join(p.name for p in people) if people else "none assigned"


@dataclass(frozen=True)
class _Subject:
    """What the placeholders of one document are filled from."""

    config: QmsConfig
    doc: ControlledDocument
    process: Process | None

    def name_of(self, person_id: str) -> str:
        return next((p.name for p in self.config.people if p.id == person_id), person_id)


def _aspects_section(s: _Subject) -> str:
    process = s.process
    if process is None or not process.aspects:
        title = process.title if process else s.doc.title
        return f"{title} covers no Art. 17(1) aspect on its own. It supports the quality management system as a whole."
    head = (
        f"The {process.title} process (`{process.key}`) implements the following aspects of the quality "
        "management system required by Art. 17(1) of Regulation (EU) 2024/1689 (as assigned in qms.yaml):"
    )
    return "\n".join([head, "", *(f"- ({a}) {ASPECTS[a]}" for a in process.aspects)])


def _slack_signing(s: _Subject) -> str:
    if s.config.approvals.slack_signing == "reauth":
        return (
            "from Slack by opening the dashboard signing page, where the password is entered again "
            "(a click in Slack alone does not sign)"
        )
    return "through Slack, where the person's Slack account identifies them"


# the placeholders without an argument, and what each is filled with
_FIELDS: dict[str, Callable[[_Subject], str]] = {
    "org.name": lambda s: s.config.organisation.name,
    "org.timezone": lambda s: s.config.organisation.timezone,
    "doc.title": lambda s: s.doc.title,
    "doc.owner": lambda s: s.name_of(s.doc.owner),
    "doc.approvers": lambda s: _names(s.config.approvers_of(s.doc)),
    "doc.review_interval_months": lambda s: str(s.doc.review_interval_months),
    "doc.signature_rule": lambda s: describe_rule(s.doc.required_signatures),
    "process.key": lambda s: s.process.key if s.process else "-",
    "process.title": lambda s: s.process.title if s.process else "-",
    "process.owner": lambda s: s.name_of(s.process.owner if s.process else s.doc.owner),
    "process.signers": lambda s: _signers(s.process.required_signatures if s.process else "all"),
    "process.signature_rule": lambda s: describe_rule(s.process.required_signatures if s.process else "all"),
    "process.aspects": _aspects_section,
    "systems": lambda s: _systems(s.config),
    "retention.years": lambda s: str(s.config.retention.years),
    "management_review.schedule": lambda s: _schedule(s.config),
    "approvals.slack_signing": _slack_signing,
}
KNOWN = (*_FIELDS, "document ID")


def values(config: QmsConfig, doc_id: str) -> Callable[[str, str | None], str]:
    """The placeholder lookup for one document: ``lookup(name, argument) -> text``."""
    subject = _Subject(
        config, config.document(doc_id), next((p for p in config.processes if p.procedure == doc_id), None)
    )
    titled = {d.id: d.title for d in config.documents}

    def lookup(name: str, argument: str | None) -> str:
        if name == "document":
            if not argument:
                raise PlaceholderError("{{qms:document ID}} needs a document id")
            return f"{argument} {titled[argument]}" if argument in titled else argument
        if name not in _FIELDS:
            raise PlaceholderError(f"unknown placeholder {{{{qms:{name}}}}} (known: {', '.join(KNOWN)})")
        if argument:
            raise PlaceholderError(f"{{{{qms:{name}}}}} takes no argument (got {argument!r})")
        return _FIELDS[name](subject)

    return lookup


def _line(text: str, match: re.Match[str]) -> int:
    return text.count("\n", 0, match.start()) + 1


def fill(text: str, lookup: Callable[[str, str | None], str], source: str) -> str:
    """``text`` with every placeholder replaced; PlaceholderError naming ``source:line`` on the first bad one."""

    def replace(match: re.Match[str]) -> str:
        try:
            return lookup(match.group(1), match.group(2))
        except PlaceholderError as exc:
            raise PlaceholderError(f"{source}:{_line(text, match)}: {exc}") from None

    return PLACEHOLDER.sub(replace, text)


def bad_placeholders(text: str, lookup: Callable[[str, str | None], str]) -> list[tuple[int, str]]:
    """Every bad placeholder of ``text``: (line, what is wrong)."""
    found = []
    for match in PLACEHOLDER.finditer(text):
        try:
            lookup(match.group(1), match.group(2))
        except PlaceholderError as exc:
            found.append((_line(text, match), str(exc)))
    return found


def problems(text: str, lookup: Callable[[str, str | None], str], source: str) -> list[str]:
    """Every bad placeholder of ``text`` as ``source:line: what``."""
    return [f"{source}:{line}: {what}" for line, what in bad_placeholders(text, lookup)]


def has_placeholders(text: str) -> bool:
    return PLACEHOLDER.search(text) is not None


def config_digest(config: QmsConfig) -> str:
    """The SHA-256 of the configuration a copy was filled from (its canonical JSON form)."""
    return hashlib.sha256(config.model_dump_json().encode("utf-8")).hexdigest()
