"""The QMS as declared in ``qms.yaml``: organisation, AI systems, people, processes, documents.

Pydantic models with ``extra="forbid"`` (unknown keys are errors), and ``cross_check`` for the
rules that span sections (owners are people, procedures are registered documents, ...). Both
report locations as paths like ``("processes", 3, "owner")`` that the loader turns into
``qms.yaml:42 processes[3].owner``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Annotated, Literal

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import limits
from .aspects import ASPECTS
from .deadlines import Ladder
from .limits import Text
from .procedures import MACHINES
from .release import ReleaseSettings

SLUG = r"^[a-z0-9][a-z0-9._-]*$"
DOC_ID = r"^[A-Z0-9][A-Z0-9._-]*$"
Slug = Annotated[str, Field(pattern=SLUG, min_length=1, max_length=limits.ID)]
DocId = Annotated[str, Field(pattern=DOC_ID, min_length=1, max_length=limits.ID)]
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
# "ssh-ed25519 AAAA… [comment]" (any OpenSSH key type) or "gpg:" and a 40-hex-digit fingerprint
SIGNING_KEY = r"^((ssh-[a-z0-9-]+|ecdsa-sha2-nistp[0-9]+|sk-[a-z0-9-]+@openssh\.com) [A-Za-z0-9+/=]{16,}( [^\n]*)?|gpg:[0-9A-Fa-f]{40})$"

SCHEDULE_ALIASES = {
    "daily": "0 6 * * *",
    "weekly": "0 6 * * 1",
    "monthly": "0 6 1 * *",
    "quarterly": "0 6 1 1,4,7,10 *",
    "yearly": "0 6 15 1 *",
}

ANNEX_III_AREAS = (
    "biometrics",
    "critical-infrastructure",
    "education",
    "employment",
    "essential-services",
    "law-enforcement",
    "migration-asylum-border",
    "justice-democracy",
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Organisation(Strict):
    name: Text(limits.NAME, min_length=1)
    address: Text(limits.COMMENT, multiline=True) | None = None
    contact_email: str | None = Field(default=None, pattern=EMAIL, max_length=limits.EMAIL)
    # the IANA time zone of the organisation: quarters, the review schedule and "today" are counted in it
    timezone: str = Field(default="UTC", max_length=64)

    @field_validator("timezone")
    @classmethod
    def _timezone_known(cls, value: str) -> str:
        from .errors import DomainError
        from .management_review import zone

        try:
            zone(value)
        except DomainError as exc:
            raise ValueError(str(exc)) from None
        return value


class AISystem(Strict):
    id: Slug
    name: Text(limits.NAME, min_length=1)
    intended_purpose: Text(limits.COMMENT, multiline=True, min_length=1)
    risk_class: Literal["high-risk", "limited-risk", "minimal-risk", "not-high-risk-art-6-3"]
    annex_iii_area: Literal[ANNEX_III_AREAS] | None = None  # type: ignore[valid-type]
    # the dates retention counts from (EU AI Act Art. 18(1)): recorded in the store when first known
    placed_on_market: date | None = None
    put_into_service: date | None = None
    withdrawn_on: date | None = None
    # release validation (docs/release-validation.md): who signs a report, and the acceptance criteria
    release: ReleaseSettings | None = None

    @model_validator(mode="after")
    def _withdrawn_after_placed(self) -> AISystem:
        if self.withdrawn_on and not (self.placed_on_market or self.put_into_service):
            raise ValueError("withdrawn_on is set but neither placed_on_market nor put_into_service is")
        for name in ("placed_on_market", "put_into_service"):
            start = getattr(self, name)
            if self.withdrawn_on and start and self.withdrawn_on < start:
                raise ValueError(f"withdrawn_on is before {name}")
        return self


# how many approvals a signed step needs: "all" named approvers who are not authors, or a number
RequiredSignatures = Literal["all"] | Annotated[int, Field(ge=1, le=20)]


class Person(Strict):
    id: Slug
    name: Text(limits.NAME, min_length=1)
    email: str = Field(pattern=EMAIL, max_length=limits.EMAIL)
    # further e-mail addresses this person commits with (git author e-mails), for segregation of duties
    git_emails: list[Annotated[str, Field(pattern=EMAIL, max_length=limits.EMAIL)]] = Field(
        default_factory=list, max_length=20
    )
    slack_id: str | None = Field(default=None, pattern=r"^[UW][A-Z0-9]{2,}$", max_length=limits.SLACK_ID)
    roles: list[Slug] = Field(default_factory=list)
    manager: Slug | None = None
    # keys that sign this person's git commits (ADR 0019): an SSH public key line, or gpg:<fingerprint>
    signing_keys: list[Annotated[str, Field(pattern=SIGNING_KEY, max_length=limits.SIGNING_KEY)]] = Field(
        default_factory=list, max_length=10
    )

    @property
    def gpg_fingerprints(self) -> frozenset[str]:
        return frozenset(k[4:].upper() for k in self.signing_keys if k.startswith("gpg:"))

    @property
    def ssh_keys(self) -> list[str]:
        return [" ".join(k.split()[:2]) for k in self.signing_keys if not k.startswith("gpg:")]


class Process(Strict):
    key: Slug
    title: Text(limits.NAME, min_length=1)
    owner: Slug
    procedure: DocId
    aspects: list[str] = Field(default_factory=list)
    schedule: Text(limits.SCHEDULE) | None = None
    required_signatures: RequiredSignatures = "all"
    # people who work in the process besides its owner (an internal auditor may not audit it)
    members: list[Slug] = Field(default_factory=list)

    @field_validator("aspects")
    @classmethod
    def _aspects_known(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if a not in ASPECTS]
        if bad:
            raise ValueError(f"unknown Art. 17(1) aspect {', '.join(map(repr, bad))} (allowed: a to m)")
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule_is_cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = SCHEDULE_ALIASES.get(value, value)
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(
                f"{value!r} is not a schedule (allowed: {', '.join(SCHEDULE_ALIASES)} "
                "or a 5-field cron expression like '0 6 * * 1')"
            )
        return value


class ControlledDocument(Strict):
    id: DocId
    title: Text(limits.DOC_TITLE, min_length=1)
    path: Text(limits.PATH, min_length=1)
    owner: Slug
    approvers: list[Text(limits.ID + len("role:"))] = Field(min_length=1)
    review_interval_months: int = Field(default=12, ge=1, le=60)
    systems: list[Slug] = Field(default_factory=list)
    required_signatures: RequiredSignatures = "all"

    @field_validator("path")
    @classmethod
    def _relative_path(cls, value: str) -> str:
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError(f"{value!r} must be a path inside the compliance repo (relative, no '..')")
        return value


class Retention(Strict):
    # years from placing on the market or putting into service (Art. 18(1): 10); longer only
    years: int = Field(default=10, ge=10, le=100)
    # organisation policy, stricter than Art. 18: also keep records this many years after withdrawal
    years_after_withdrawal: int | None = Field(default=None, ge=1, le=100)
    anchors_file: str = "records/trail-anchors.jsonl"


_SECRET_KEYS = ("token", "api_token", "password", "secret", "signing_secret", "bot_token", "app_token")


class _NoSecrets(Strict):
    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in data:
                if key in _SECRET_KEYS:
                    env_keys = ", ".join(k for k in cls.model_fields if k.endswith("_env"))
                    raise ValueError(
                        f"{key!r} must not be written in qms.yaml: secrets come from environment "
                        f"variables only (name the variables with: {env_keys})"
                    )
        return data


DEFAULT_JIRA_STATUSES = {
    "opened": "To Do",
    "containment": "In Progress",
    "root_cause": "In Progress",
    "action_plan": "To Do",  # an approved plan waits in the backlog; starting it in Jira = implementation
    "implementation": "In Progress",
    "effectiveness_check": "In Review",
    "closed": "Done",
}


DEFAULT_JIRA_INBOUND = {"In Progress": "implementation", "Done": "closed", "In Review": "effectiveness_check"}
DEFAULT_JIRA_ISSUE_TYPES = {"capa": "Task"}
JiraName = Annotated[str, Field(min_length=1, max_length=255)]


class JiraKind(Strict):
    """How the records of one kind are mirrored in Jira; each map merges with the kind's defaults."""

    mirror: bool = True
    issue_type: JiraName | None = None
    # stage -> Jira status name; several stages may share a status
    statuses: dict[str, JiraName] = Field(default_factory=dict)
    # Jira status name -> the stage a move to it asks for (else: the first stage mapped to it)
    inbound: dict[str, str] = Field(default_factory=dict)


# the defaults of the mirrored kinds: which become Jira issues unless `kinds: {KIND: {mirror: false}}`
DEFAULT_JIRA_KINDS: dict[str, dict] = {
    "capa": {"issue_type": "Task", "statuses": DEFAULT_JIRA_STATUSES, "inbound": DEFAULT_JIRA_INBOUND},
    # actions decided by a management review
    "mr-action": {
        "issue_type": "Task",
        "statuses": {"open": "To Do", "in_progress": "In Progress", "done": "Done", "cancelled": "Done"},
        "inbound": {"In Progress": "in_progress", "Done": "done"},
    },
}


@dataclass(frozen=True)
class ResolvedJiraKind:
    issue_type: str
    statuses: dict[str, str]
    inbound: dict[str, str]


class JiraIntegration(_NoSecrets):
    """The Jira site of the team. The three maps **merge** with their defaults: name only what differs."""

    enabled: bool = True
    url: str = Field(pattern=r"^https?://")
    project: str = Field(pattern=r"^[A-Z][A-Z0-9_]+$")
    deployment: Literal["cloud", "data-center"] = "cloud"
    email_env: str = "JIRA_EMAIL"
    token_env: str = "JIRA_API_TOKEN"
    webhook_secret_env: str = "JIRA_WEBHOOK_SECRET"
    # record kind -> Jira issue type name
    issue_types: dict[str, JiraName] = Field(default_factory=lambda: dict(DEFAULT_JIRA_ISSUE_TYPES))
    # QMS stage -> Jira status name; several stages may share a status
    statuses: dict[str, JiraName] = Field(default_factory=lambda: dict(DEFAULT_JIRA_STATUSES))
    # Jira status name -> the QMS stage a move to it asks for (else: the first stage mapped to it)
    inbound: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_JIRA_INBOUND))
    # record kind -> how its records are mirrored (issue type, status maps); CAPA is mirrored by default
    kinds: dict[str, JiraKind] = Field(default_factory=dict)
    on_refused: Literal["revert", "comment"] = "revert"
    # a webhook whose signed timestamp is older is ignored (Jira retries for up to 30 minutes)
    webhook_window_minutes: int = Field(default=60, ge=5, le=24 * 60)

    @field_validator("issue_types")
    @classmethod
    def _issue_types_merge(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = [k for k in value if k not in DEFAULT_JIRA_ISSUE_TYPES]
        if unknown:
            raise ValueError(
                f"unknown record kind {', '.join(map(repr, unknown))} (allowed: {', '.join(DEFAULT_JIRA_ISSUE_TYPES)})"
            )
        return {**DEFAULT_JIRA_ISSUE_TYPES, **value}

    @field_validator("statuses")
    @classmethod
    def _statuses_merge(cls, value: dict[str, str]) -> dict[str, str]:
        stages = MACHINES["capa"].keys
        unknown = [k for k in value if k not in stages]
        if unknown:
            raise ValueError(f"unknown CAPA stage {', '.join(map(repr, unknown))} (allowed: {', '.join(stages)})")
        return {**DEFAULT_JIRA_STATUSES, **value}

    @field_validator("inbound")
    @classmethod
    def _inbound_merge(cls, value: dict[str, str]) -> dict[str, str]:
        stages = MACHINES["capa"].keys
        wrong = [f"{status!r}: {stage!r}" for status, stage in value.items() if stage not in stages]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} is not a CAPA stage (allowed: {', '.join(stages)})")
        return {**DEFAULT_JIRA_INBOUND, **value}

    @field_validator("kinds")
    @classmethod
    def _kinds_known(cls, value: dict[str, JiraKind]) -> dict[str, JiraKind]:
        for kind, settings in value.items():
            machine = MACHINES.get(kind)
            if machine is None:
                raise ValueError(f"{kind!r} is not a record kind with stages (kinds: {', '.join(sorted(MACHINES))})")
            wrong = [s for s in [*settings.statuses, *settings.inbound.values()] if s not in machine.keys]
            if wrong:
                raise ValueError(
                    f"kinds.{kind}: {', '.join(map(repr, wrong))} is not a {kind} stage "
                    f"(allowed: {', '.join(machine.keys)})"
                )
        return value

    def kind(self, kind: str) -> ResolvedJiraKind | None:
        """How records of ``kind`` are mirrored, or None when they are not. The CAPA shorthand at the top
        (``issue_types``, ``statuses``, ``inbound``) and ``kinds.capa`` both merge with the defaults."""
        given = self.kinds.get(kind)
        defaults = DEFAULT_JIRA_KINDS.get(kind)
        if (given is not None and not given.mirror) or (given is None and defaults is None):
            return None
        base = defaults or {"issue_type": "Task", "statuses": {}, "inbound": {}}
        statuses, inbound = dict(base["statuses"]), dict(base["inbound"])
        issue_type = self.issue_types.get(kind) or base["issue_type"]
        if kind == "capa":
            statuses.update(self.statuses)
            inbound.update(self.inbound)
        if given is not None:
            statuses.update(given.statuses)
            inbound.update(given.inbound)
            issue_type = given.issue_type or issue_type
        return ResolvedJiraKind(issue_type, statuses, inbound)


class SlackIntegration(_NoSecrets):
    enabled: bool = True
    channel: str | None = None
    bot_token_env: str = "SLACK_BOT_TOKEN"
    signing_secret_env: str = "SLACK_SIGNING_SECRET"
    app_token_env: str = "SLACK_APP_TOKEN"
    socket_mode: bool = False
    base_url: str | None = Field(default=None, pattern=r"^https?://")


class OutboxSettings(Strict):
    # a message the target refuses this many times in a row is parked (outages never park a message)
    park_after: int = Field(default=5, ge=1, le=100)


class Integrations(Strict):
    jira: JiraIntegration | None = None
    slack: SlackIntegration | None = None
    outbox: OutboxSettings = OutboxSettings()


class LadderSettings(Strict):
    """The days of a deadline ladder (remind, escalate to the manager, escalate further), in order.

    A procedure's settings section subclasses it with its own defaults (approvals, CAPA; next audit
    findings, management review actions, incident clocks)."""

    remind_after_days: int
    escalate_after_days: int
    escalate_further_after_days: int | None = None

    @model_validator(mode="after")
    def _in_order(self) -> LadderSettings:
        if self.escalate_after_days <= self.remind_after_days:
            raise ValueError("escalate_after_days must be greater than remind_after_days")
        if (
            self.escalate_further_after_days is not None
            and self.escalate_further_after_days <= self.escalate_after_days
        ):
            raise ValueError("escalate_further_after_days must be greater than escalate_after_days")
        return self

    def ladder(self) -> Ladder:
        return Ladder.of(self.remind_after_days, self.escalate_after_days, self.escalate_further_after_days)


class ApprovalSettings(LadderSettings):
    """Pending signatures: the deadline ladder runs from the request's creation (days)."""

    remind_after_days: int = Field(default=3, ge=1, le=90)
    escalate_after_days: int = Field(default=7, ge=1, le=180)
    # the manager's manager; none by default
    escalate_further_after_days: int | None = Field(default=None, ge=1, le=365)
    due_days: int = Field(default=14, ge=1, le=365)
    # click: a Slack button signs (the Slack account is the identity); reauth: the button opens the
    # dashboard signing page, where the password is entered again (21 CFR Part 11 §11.200)
    slack_signing: Literal["click", "reauth"] = "click"


class CapaSettings(LadderSettings):
    """Overdue CAPA stages: the deadline ladder runs from the stage's due date (days after it)."""

    remind_after_days: int = Field(default=1, ge=1, le=90)  # the CAPA owner; 1: the first day overdue
    escalate_after_days: int = Field(default=7, ge=1, le=180)  # the owner's manager
    escalate_further_after_days: int | None = Field(default=None, ge=1, le=365)  # the manager's manager


class ExternalAuditor(Strict):
    """A person of ``people`` who audits from outside the organisation (no process role here)."""

    person: Slug
    organisation: Text(limits.NAME, min_length=1)


class AuditSettings(LadderSettings):
    """Internal audit (SOP-AUD-001): the programme's frequencies and the deadline ladder of an audit overdue
    against its planned date, or a finding whose re-check is overdue (days after the date)."""

    remind_after_days: int = Field(default=1, ge=1, le=90)  # the auditor (audit) or the auditee (finding)
    escalate_after_days: int = Field(default=14, ge=1, le=180)  # their manager
    escalate_further_after_days: int | None = Field(default=None, ge=1, le=365)
    # months between audits of a process unless named in every_months (12: once a year, the most allowed)
    default_every_months: Literal[1, 2, 3, 4, 6, 12] = 12
    every_months: dict[Slug, Literal[1, 2, 3, 4, 6, 12]] = Field(default_factory=dict)
    # a process with an open major finding or an overdue CAPA is due within this many days
    pull_in_days: int = Field(default=90, ge=1, le=365)
    # days after a finding's CAPA is opened by which its re-check (follow-up audit) is due
    recheck_days: int = Field(default=60, ge=1, le=365)
    external_auditors: list[ExternalAuditor] = Field(default_factory=list)


class ManagementReviewSettings(LadderSettings):
    """Management review (QMS-001 4.6): who signs the minutes, when the review starts, and the deadline
    ladder of its overdue actions (days after an action's due date: its owner, their manager, theirs)."""

    remind_after_days: int = Field(default=1, ge=1, le=90)
    escalate_after_days: int = Field(default=7, ge=1, le=180)
    escalate_further_after_days: int | None = Field(default=None, ge=1, le=365)
    # the people who sign the minutes; empty: everyone with the role "management"
    top_management: list[Slug] = Field(default_factory=list, max_length=20)
    required_signatures: RequiredSignatures = "all"
    # "first-working-day" (of each quarter, in organisation.timezone) or a 5-field cron expression
    schedule: Text(limits.SCHEDULE) = "first-working-day"
    # days that are not working days besides weekends and 1 January (public holidays of the organisation)
    non_working_days: list[date] = Field(default_factory=list, max_length=400)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if value == "first-working-day":
            return value
        value = SCHEDULE_ALIASES.get(value, value)
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(
                f"{value!r} is not a schedule (allowed: first-working-day, {', '.join(SCHEDULE_ALIASES)} "
                "or a 5-field cron expression like '0 7 1 1,4,7,10 *')"
            )
        return value


class WebSettings(Strict):
    base_url: str = Field(default="http://127.0.0.1:8000", pattern=r"^https?://")
    # request bodies over this are answered 413 before they are read (Slack and Jira send far less)
    max_request_kib: int = Field(default=limits.REQUEST_BYTES // 1024, ge=64, le=64 * 1024)


class StackSettings(Strict):
    """The embedded stack of ``qms up``."""

    # its runner runs at most this many flow runs at once; more wait, Scheduled, for a free slot (a
    # review waiting for signatures holds none). Unbounded, a burst of 50 approvals started 50 Python
    # processes on 2 cores against Prefect's SQLite server, and a run crashed on the API's timeouts.
    # The production topology's equivalent is `prefect worker start --limit N`.
    max_flow_runs: int = Field(default=4, ge=1, le=64)


MAX_TOKEN_DAYS = 365


class SecuritySettings(Strict):
    """Identity on the command line. Tokens expire; ``trusted_single_user`` is for demos and evaluation."""

    # --as PERSON (and QMS_ACTOR) accepted for every command: whoever has a shell on this repo is
    # trusted to act as anyone. Never for a QMS whose records must hold up in an audit.
    trusted_single_user: bool = False
    # every commit of a change under review must be signed by a key of its author (people[].signing_keys)
    require_signed_commits: bool = False
    token_days: int = Field(default=30, ge=1, le=MAX_TOKEN_DAYS)


class QmsConfig(Strict):
    version: Literal[1] = 1
    organisation: Organisation
    systems: list[AISystem] = Field(default_factory=list)
    people: list[Person] = Field(min_length=1)
    processes: list[Process] = Field(default_factory=list)
    documents: list[ControlledDocument] = Field(default_factory=list)
    retention: Retention = Retention()
    approvals: ApprovalSettings = ApprovalSettings()
    capa: CapaSettings = CapaSettings()
    audit: AuditSettings = AuditSettings()
    management_review: ManagementReviewSettings = ManagementReviewSettings()
    web: WebSettings = WebSettings()
    integrations: Integrations = Integrations()
    security: SecuritySettings = SecuritySettings()
    stack: StackSettings = StackSettings()

    def person(self, person_id: str) -> Person:
        return next(p for p in self.people if p.id == person_id)

    def person_by_email(self, email: str) -> Person | None:
        """The person who uses this e-mail address (their e-mail or one of their git e-mails), if any."""
        wanted = email.strip().lower()
        for person in self.people:
            if person.email.lower() == wanted or wanted in (e.lower() for e in person.git_emails):
                return person
        return None

    def document(self, doc_id: str) -> ControlledDocument:
        return next(d for d in self.documents if d.id == doc_id)

    def process(self, key: str) -> Process:
        return next(p for p in self.processes if p.key == key)

    def system(self, system_id: str) -> AISystem | None:
        return next((s for s in self.systems if s.id == system_id), None)

    def release_signers(self, system_id: str) -> list[Person]:
        """The people who sign a validation report of ``system_id``: named people and holders of ``role:`` entries."""
        system = self.system(system_id)
        if system is None or system.release is None:
            return []
        return self._resolve(system.release.signers)

    def _resolve(self, entries: list[str]) -> list[Person]:
        wanted: list[Person] = []
        for entry in entries:
            if entry.startswith("role:"):
                role = entry.removeprefix("role:")
                wanted.extend(p for p in self.people if role in p.roles and p not in wanted)
            else:
                wanted.extend(p for p in self.people if p.id == entry and p not in wanted)
        return wanted

    def top_management(self) -> list[str]:
        """Who signs management review minutes: ``management_review.top_management``, else the people with
        the role ``management``."""
        named = list(self.management_review.top_management)
        return named or [p.id for p in self.people if "management" in p.roles]

    def covered_aspects(self) -> set[str]:
        return {a for p in self.processes for a in p.aspects}

    def approvers_of(self, doc: ControlledDocument) -> list[Person]:
        """People who may approve a document: named people and holders of ``role:`` entries."""
        wanted: list[Person] = []
        for entry in doc.approvers:
            if entry.startswith("role:"):
                role = entry.removeprefix("role:")
                wanted.extend(p for p in self.people if role in p.roles and p not in wanted)
            else:
                wanted.extend(p for p in self.people if p.id == entry and p not in wanted)
        return wanted


Loc = tuple[str | int, ...]


def cross_check(config: QmsConfig) -> list[tuple[Loc, str]]:
    """Rules across sections. Returns (location, message) pairs; empty when all hold."""
    issues: list[tuple[Loc, str]] = []
    people = [p.id for p in config.people]
    roles = sorted({r for p in config.people for r in p.roles})
    docs = [d.id for d in config.documents]
    systems = [s.id for s in config.systems]

    def dupes(items: list[str], section: str, field: str) -> None:
        seen: set[str] = set()
        for index, item in enumerate(items):
            if item in seen:
                issues.append(((section, index, field), f"{item!r} is declared twice ({section} ids must be unique)"))
            seen.add(item)

    def is_person(value: str, loc: Loc) -> bool:
        if value not in people:
            issues.append((loc, f"{value!r} is not a person (people: {', '.join(people)})"))
            return False
        return True

    dupes(people, "people", "id")
    dupes([p.key for p in config.processes], "processes", "key")
    dupes(docs, "documents", "id")
    dupes(systems, "systems", "id")
    dupes([d.path for d in config.documents], "documents", "path")
    if issues:  # with ambiguous ids every further check would only add noise
        return issues

    for i, person in enumerate(config.people):
        if person.manager is not None:
            if person.manager == person.id:
                issues.append((("people", i, "manager"), f"{person.id!r} cannot be their own manager"))
            else:
                is_person(person.manager, ("people", i, "manager"))
    by_id = {p.id: p for p in config.people}
    for i, person in enumerate(config.people):  # manager cycles make escalation loop forever
        seen, current = {person.id}, person.manager
        while current in by_id and current not in seen:
            seen.add(current)
            current = by_id[current].manager
        if current == person.id and person.manager != person.id:
            issues.append((("people", i, "manager"), f"managers form a cycle through {person.id!r}"))

    for i, person_id in enumerate(config.management_review.top_management):
        is_person(person_id, ("management_review", "top_management", i))

    for i, process in enumerate(config.processes):
        is_person(process.owner, ("processes", i, "owner"))
        for j, member in enumerate(process.members):
            is_person(member, ("processes", i, "members", j))
        if process.procedure not in docs:
            issues.append(
                (
                    ("processes", i, "procedure"),
                    f"{process.procedure!r} is not a registered document (documents: {', '.join(docs) or 'none'})",
                )
            )

    for i, system in enumerate(config.systems):
        if system.release is None:
            continue
        for j, entry in enumerate(system.release.signers):
            loc = ("systems", i, "release", "signers", j)
            if entry.startswith("role:"):
                if entry.removeprefix("role:") not in roles:
                    issues.append(
                        (
                            loc,
                            f"{entry!r}: nobody has the role {entry.removeprefix('role:')!r} (roles: {', '.join(roles) or 'none'})",
                        )
                    )
            else:
                is_person(entry, loc)
        for j, criterion_id in system.release.duplicate_ids():
            issues.append(
                (
                    ("systems", i, "release", "criteria", j, "id"),
                    f"criterion id {criterion_id!r} is declared twice (criterion ids must be unique per system)",
                )
            )
        if system.release.process not in {p.key for p in config.processes}:
            issues.append(
                (
                    ("systems", i, "release", "process"),
                    f"{system.release.process!r} is not a QMS process (processes: {', '.join(p.key for p in config.processes) or 'none'})",
                )
            )
        signers = config.release_signers(system.id)
        required = system.release.required_signatures
        if isinstance(required, int) and signers and required > len(signers):
            issues.append(
                (
                    ("systems", i, "release", "required_signatures"),
                    f"needs {required} signatures but the release has only {len(signers)} signer(s): "
                    f"{', '.join(p.id for p in signers)}",
                )
            )
    keys = [p.key for p in config.processes]
    for key in config.audit.every_months:
        if key not in keys:
            issues.append((("audit", "every_months", key), f"{key!r} is not a process (processes: {', '.join(keys)})"))
    for i, external in enumerate(config.audit.external_auditors):
        is_person(external.person, ("audit", "external_auditors", i, "person"))

    for i, doc in enumerate(config.documents):
        is_person(doc.owner, ("documents", i, "owner"))
        for j, entry in enumerate(doc.approvers):
            loc: Loc = ("documents", i, "approvers", j)
            if entry.startswith("role:"):
                role = entry.removeprefix("role:")
                if role not in roles:
                    issues.append(
                        (loc, f"{entry!r}: nobody has the role {role!r} (roles: {', '.join(roles) or 'none'})")
                    )
            else:
                is_person(entry, loc)
        approvers = config.approvers_of(doc)
        if isinstance(doc.required_signatures, int) and approvers and doc.required_signatures > len(approvers):
            issues.append(
                (
                    ("documents", i, "required_signatures"),
                    f"needs {doc.required_signatures} signatures but the document has only {len(approvers)} "
                    f"approver(s): {', '.join(p.id for p in approvers)}",
                )
            )
        if approvers and all(p.id == doc.owner for p in approvers):
            issues.append(
                (
                    ("documents", i, "approvers"),
                    f"the owner {doc.owner!r} cannot be the only approver (segregation of duties: add another person or role)",
                )
            )
        for j, system in enumerate(doc.systems):
            if system not in systems:
                issues.append(
                    (
                        ("documents", i, "systems", j),
                        f"{system!r} is not an AI system (systems: {', '.join(systems) or 'none'})",
                    )
                )
    return issues
