"""qms.yaml validation: every error names file, line and field, and says what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qmsflow.scaffold import environment
from qmsflow.settings import ConfigError, check_repo, find_config, load_config, parse_config

SAMPLE = environment().get_template("scaffold/qms.yaml.j2").render(org_name="Test AI GmbH")


def line(text: str, needle: str) -> int:
    """Line of ``needle`` in ``text``; a needle ending in a newline must match a whole line, the last one."""
    if needle.endswith("\n"):
        hits = [i for i, t in enumerate(text.splitlines(), 1) if t.strip() == needle.strip()]
        return hits[-1]
    hits = [i for i, text_line in enumerate(text.splitlines(), 1) if needle in text_line]
    assert len(hits) == 1, f"{needle!r} found on lines {hits}"
    return hits[0]


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, Path("/repo/qms.yaml"))
    return [str(issue) for issue in caught.value.issues]


def mutate(old: str, new: str, count: int = 1) -> str:
    assert SAMPLE.count(old) >= 1, old
    return SAMPLE.replace(old, new, count)


CAPA_OWNER = "    owner: ana\n    procedure: SOP-CAPA-001"

BAD_CONFIGS = [
    # (id, mutated text, needle on the reported line, expected message after "qms.yaml:LINE ")
    (
        "owner-not-a-person",
        mutate(CAPA_OWNER, "    owner: quality-team\n    procedure: SOP-CAPA-001"),
        "owner: quality-team",
        "processes[7].owner: 'quality-team' is not a person (people: ana, ben, chloe, dev)",
    ),
    (
        "unknown-key",
        mutate(CAPA_OWNER, CAPA_OWNER + "\n    team: quality"),
        "team: quality",
        "processes[7].team: unknown key 'team' (allowed: key, title, owner, procedure, aspects, schedule, required_signatures, members)",
    ),
    (
        "unknown-aspect",
        mutate("aspects: [g]", "aspects: [g, z]"),
        "aspects: [g, z]",
        "processes[4].aspects: unknown Art. 17(1) aspect 'z' (allowed: a to m)",
    ),
    (
        "bad-schedule",
        mutate("schedule: quarterly", "schedule: sometimes"),
        "schedule: sometimes",
        "processes[4].schedule: 'sometimes' is not a schedule (allowed: daily, weekly, monthly, quarterly, yearly "
        "or a 5-field cron expression like '0 6 * * 1')",
    ),
    (
        "procedure-not-registered",
        mutate("procedure: SOP-CAPA-001", "procedure: SOP-XYZ-001"),
        "procedure: SOP-XYZ-001",
        "processes[7].procedure: 'SOP-XYZ-001' is not a registered document (documents: QMS-001, SOP-DES-001, "
        "SOP-TST-001, SOP-DAT-001, SOP-RSK-001, SOP-CHG-001, SOP-AUD-001, SOP-CAPA-001, SOP-DOC-001, SOP-PMM-001, "
        "REG-RSK-001)",
    ),
    ("missing-name", mutate("    name: Dev Patel\n", ""), "- id: dev", "people[3].name: required, but missing"),
    (
        "bad-email",
        mutate("email: dev@example.com", "email: dev-at-example"),
        "email: dev-at-example",
        "people[3].email: 'dev-at-example' is not valid (must match ^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$)",
    ),
    (
        "unknown-manager",
        mutate("    manager: chloe\n", "    manager: zoe\n"),
        "manager: zoe",
        "people[3].manager: 'zoe' is not a person (people: ana, ben, chloe, dev)",
    ),
    (
        "short-retention",
        mutate("years: 10 ", "years: 5 "),
        "years: 5",
        "retention.years: Input should be greater than or equal to 10 (got 5)",
    ),
    (
        "inline-secret",
        mutate(
            "retention:",
            "integrations:\n  jira: {url: 'https://x.atlassian.net', project: QMS, token: abc}\nretention:",
        ),
        "jira: {url: 'https",
        "integrations.jira: 'token' must not be written in qms.yaml: secrets come from environment variables only "
        "(name the variables with: email_env, token_env, webhook_secret_env)",
    ),
    (
        "duplicate-person",
        mutate("  - id: dev\n", "  - id: chloe\n"),
        "- id: chloe\n",
        "people[3].id: 'chloe' is declared twice (people ids must be unique)",
    ),
    (
        "bad-risk-class",
        mutate(
            "risk_class: high-risk\n    annex_iii_area: employment", "risk_class: high\n    annex_iii_area: employment"
        ),
        "risk_class: high\n",
        "systems[0].risk_class: 'high' is not allowed (allowed: 'high-risk', 'limited-risk', 'minimal-risk' or "
        "'not-high-risk-art-6-3')",
    ),
    (
        "unknown-approver-role",
        mutate(
            "approvers: [ben], review_interval_months: 12", "approvers: ['role:auditor'], review_interval_months: 12"
        ),
        "role:auditor",
        "documents[8].approvers[0]: 'role:auditor': nobody has the role 'auditor' (roles: approver, engineer, "
        "engineering-lead, management, quality-lead)",
    ),
    (
        "owner-sole-approver",
        mutate("owner: ana, approvers: [ben], review", "owner: ana, approvers: [ana], review"),
        "approvers: [ana], review",
        "documents[8].approvers: the owner 'ana' cannot be the only approver (segregation of duties: add another "
        "person or role)",
    ),
    (
        "annex-area",
        mutate("annex_iii_area: employment", "annex_iii_area: hiring"),
        "annex_iii_area: hiring",
        "systems[0].annex_iii_area: 'hiring' is not allowed (allowed: 'biometrics', 'critical-infrastructure', "
        "'education', 'employment', 'essential-services', 'law-enforcement', 'migration-asylum-border' or "
        "'justice-democracy')",
    ),
    (
        "runner-limit",
        mutate("  max_flow_runs: 4", "  max_flow_runs: 0"),
        "max_flow_runs: 0",
        "stack.max_flow_runs: Input should be greater than or equal to 1 (got 0)",
    ),
]


@pytest.mark.parametrize(("text", "needle", "message"), [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_names_file_line_and_field(text: str, needle: str, message: str) -> None:
    assert errors_of(text) == [f"qms.yaml:{line(text, needle)} {message}"]


def test_sample_config_is_valid() -> None:
    config = parse_config(SAMPLE, Path("/repo/qms.yaml")).config
    assert len(config.documents) == 11  # ten procedures and the risk register
    assert config.covered_aspects() == set("abcdefghijklm")


def test_yaml_syntax_error_names_the_line() -> None:
    text = mutate("  - id: dev\n", "  - id: [dev\n")
    [message] = errors_of(text)
    assert message.startswith("qms.yaml:")
    assert "not valid YAML" in message


def test_several_errors_are_all_reported_in_line_order() -> None:
    text = mutate("email: dev@example.com", "email: nope").replace("schedule: quarterly", "schedule: often")
    messages = errors_of(text)
    assert len(messages) == 2
    assert "people[3].email" in messages[0] and "processes[4].schedule" in messages[1]


def test_withdrawn_before_placed_is_refused() -> None:
    text = mutate("placed_on_market: 2026-09-01", "placed_on_market: 2026-09-01\n    withdrawn_on: 2026-01-01")
    assert errors_of(text) == [
        f"qms.yaml:{line(text, '- id: triage-assist')} systems[0]: withdrawn_on is before placed_on_market"
    ]


def test_not_a_mapping() -> None:
    assert errors_of("- just\n- a list\n") == [
        "qms.yaml:1 must be a mapping with organisation, people, processes, documents ..."
    ]


def test_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, nested = tmp_path / "a", tmp_path / "b", tmp_path / "b" / "x" / "y"
    for folder in (a, b, nested):
        folder.mkdir(parents=True, exist_ok=True)
    (a / "qms.yaml").write_text(SAMPLE)
    (b / "qms.yaml").write_text(SAMPLE)
    monkeypatch.delenv("QMS_CONFIG", raising=False)
    assert find_config(cwd=nested) == b / "qms.yaml"  # current folder or a parent
    monkeypatch.setenv("QMS_CONFIG", str(a / "qms.yaml"))
    assert find_config(cwd=nested) == (a / "qms.yaml").resolve()  # QMS_CONFIG beats the folder
    assert find_config(b, cwd=nested) == (b / "qms.yaml").resolve()  # --config beats QMS_CONFIG
    monkeypatch.setenv("QMS_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="QMS_CONFIG points to .*missing.yaml, which does not exist"):
        find_config(cwd=nested)


def test_no_config_anywhere_says_how_to_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QMS_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="no qms.yaml found .* run 'qms init DIR'"):
        find_config(cwd=tmp_path)


def test_check_repo_reports_missing_documents_and_uncovered_aspects(repo: Path) -> None:
    text = (repo / "qms.yaml").read_text().replace("aspects: [f]", "aspects: []")
    (repo / "qms.yaml").write_text(text)
    (repo / "procedures" / "SOP-RSK-001-risk-management.md").unlink()
    loaded = load_config(repo / "qms.yaml")
    errors, warnings = check_repo(loaded)
    assert [str(e) for e in errors] == [
        f"qms.yaml:{line(text, 'SOP-RSK-001-risk')} documents[4].path: "
        f"'procedures/SOP-RSK-001-risk-management.md' does not exist in {repo.resolve()}"
    ]
    assert warnings == ["Art. 17(1) aspects covered by no process: (f) — add them to the 'aspects' of a process"]


# ---------------------------------------------------------------- bounded loading (issue 11 point 3)
# Every process loads qms.yaml, so a hostile one must be refused at once with a qms.yaml:LINE error,
# never hang, exhaust memory or end in a RecursionError. The timeouts turn a hang into a failure.


def bomb(levels: int = 10, fanout: int = 10) -> str:
    lines = ["lol0: &lol0 [" + ", ".join(["lol"] * fanout) + "]"]
    for i in range(1, levels):
        lines.append(f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * fanout) + "]")
    return "\n".join(lines) + "\n"


def first_error(text: str) -> str:
    [message] = errors_of(text)
    return message


@pytest.mark.timeout(60)
def test_yaml_bomb_is_refused_at_its_line() -> None:
    text = SAMPLE + bomb()
    message = first_error(text)
    assert message.startswith("qms.yaml:")
    assert "expands to more than 250,000 values through aliases" in message
    line_no = int(message.split()[0].split(":")[1])
    assert text.splitlines()[line_no - 1].startswith("lol")


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "nested",
    [
        pytest.param("x: " + "[" * 100_000 + "]" * 100_000 + "\n", id="flow-sequences"),
        pytest.param("x: " + "{a: " * 100_000 + "1" + "}" * 100_000 + "\n", id="flow-mappings"),
        pytest.param("x:\n" + "".join("  " * i + "- \n" for i in range(1, 400)), id="block-sequences"),
        pytest.param("x:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 400)), id="block-mappings"),
    ],
)
def test_deep_nesting_is_refused_not_a_recursion_error(nested: str) -> None:
    message = first_error(SAMPLE + nested)
    assert message == f"qms.yaml:{message.split()[0].split(':')[1]} nested deeper than 32 levels"
    assert int(message.split()[0].split(":")[1]) > SAMPLE.count("\n")  # at the nested part, not line 1


def test_an_alias_that_contains_itself_is_refused() -> None:
    assert first_error(SAMPLE + "x: &loop [1, *loop]\n") == (
        f"qms.yaml:{SAMPLE.count(chr(10)) + 1} alias *loop refers to a value that contains it"
    )


def test_ordinary_anchors_and_aliases_still_work() -> None:
    text = mutate(
        "risk-management.md, owner: ana, approvers: [ben]}", "risk-management.md, owner: ana, approvers: &leads [ben]}"
    )
    text = text.replace(
        "internal-audit.md, owner: ana, approvers: [ben]}", "internal-audit.md, owner: ana, approvers: *leads}"
    )
    assert "*leads}" in text
    config = parse_config(text, Path("/repo/qms.yaml")).config
    assert config.document("SOP-AUD-001").approvers == config.document("SOP-RSK-001").approvers == ["ben"]


def test_non_utf8_file_is_named_with_line_and_byte_offset(tmp_path: Path) -> None:
    raw = SAMPLE.encode().replace(b"Ana Alves", b"Ana \xe9lves")  # Latin-1 bytes in a UTF-8 file
    (tmp_path / "qms.yaml").write_bytes(raw)
    offset = raw.index(b"\xe9")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "qms.yaml")
    assert str(caught.value) == (
        f"qms.yaml:{line(SAMPLE, 'Ana Alves')} is not UTF-8 text (byte 0xe9 at byte offset {offset}): "
        "save the file as UTF-8"
    )


def test_a_file_over_the_size_limit_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "qms.yaml"
    with path.open("w") as handle:
        handle.write(SAMPLE)
        handle.write("# padding\n" * 200_000)  # 2 MB
    with pytest.raises(ConfigError, match=r"^qms.yaml:1 is larger than 1,024 KiB, the limit for a qms.yaml$"):
        load_config(path)


@pytest.mark.parametrize(("char", "name"), [("\x00", "U+0000"), ("\x07", "U+0007"), ("\x1b", "U+001B")])
def test_control_characters_are_named_with_their_line(char: str, name: str) -> None:
    text = SAMPLE.replace("Ana Alves", f"Ana{char}Alves")
    assert first_error(text) == (
        f"qms.yaml:{line(SAMPLE, 'Ana Alves')} not valid YAML: the control character {name} (column 14) is not allowed"
    )


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("name: Ana Alves", "name: " + "A" * 100_000, "people[0].name: 100,000 characters long, at most 200 allowed"),
        (
            "title: Document control procedure",
            "title: " + "T" * 301,
            "documents[8].title: 301 characters long, at most 300 allowed",
        ),
        ("id: ana", "id: " + "a" * 65, "people[0].id: 65 characters long, at most 64 allowed"),
    ],
)
def test_strings_longer_than_their_columns_are_refused(old: str, new: str, message: str) -> None:
    text = mutate(old, new)
    messages = errors_of(text)
    assert f"qms.yaml:{line(SAMPLE, old)} {message}" in messages
    assert all(len(m) < 400 for m in messages)  # the 100,000 characters are not echoed back


@given(
    position=st.integers(min_value=0, max_value=len(SAMPLE)),
    noise=st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_text_makes_the_loader_fail_other_than_with_a_config_error(position: int, noise: str) -> None:
    text = SAMPLE[:position] + noise + SAMPLE[position:]
    try:
        parse_config(text, Path("/repo/qms.yaml"))
    except ConfigError as exc:
        assert all(str(issue).startswith("qms.yaml:") for issue in exc.issues), str(exc)


def with_jira(block: str) -> str:
    return SAMPLE.replace("retention:", f"integrations:\n  jira:\n{block}retention:", 1)


JIRA_SITE = "    url: https://acme.atlassian.net\n    project: QMS\n"


def test_partial_jira_maps_merge_with_the_defaults() -> None:
    from qmsflow.domain.organisation import DEFAULT_JIRA_INBOUND, DEFAULT_JIRA_STATUSES

    text = with_jira(
        JIRA_SITE + "    statuses: {effectiveness_check: In Progress}\n    inbound: {Blocked: root_cause}\n"
    )
    jira = parse_config(text, Path("/repo/qms.yaml")).config.integrations.jira
    assert jira.statuses == {**DEFAULT_JIRA_STATUSES, "effectiveness_check": "In Progress"}
    assert jira.inbound == {**DEFAULT_JIRA_INBOUND, "Blocked": "root_cause"}
    assert jira.issue_types == {"capa": "Task"}
    assert parse_config(SAMPLE, Path("/repo/qms.yaml")).config.integrations.outbox.park_after == 5


@pytest.mark.parametrize(
    ("block", "needle", "message"),
    [
        (
            "    statuses: {efectiveness_check: QA}\n",
            "statuses: {efectiveness_check",
            "integrations.jira.statuses: unknown CAPA stage 'efectiveness_check' (allowed: opened, containment, "
            "root_cause, action_plan, implementation, effectiveness_check, closed)",
        ),
        (
            "    inbound: {QA: review}\n",
            "inbound: {QA",
            "integrations.jira.inbound: 'QA': 'review' is not a CAPA stage (allowed: opened, containment, "
            "root_cause, action_plan, implementation, effectiveness_check, closed)",
        ),
        ("    statuses: {closed: ''}\n", "statuses: {closed", "integrations.jira.statuses.closed: "),
        (
            "    issue_types: {incident: Bug}\n",
            "types: {incident",
            "integrations.jira.issue_types: unknown record kind",
        ),
    ],
    ids=["unknown-stage", "inbound-not-a-stage", "empty-status", "unknown-kind"],
)
def test_jira_map_mistakes_name_the_setting(block: str, needle: str, message: str) -> None:
    text = with_jira(JIRA_SITE + block)
    [error] = errors_of(text)
    assert error.startswith(f"qms.yaml:{line(text, needle)} {message}")


def test_park_after_is_bounded() -> None:
    text = SAMPLE.replace("retention:", "integrations:\n  outbox: {park_after: 0}\nretention:", 1)
    [error] = errors_of(text)
    assert "integrations.outbox.park_after" in error


def test_the_documented_jira_example_of_the_scaffold_is_valid() -> None:
    """The commented jira block of the scaffolded qms.yaml, uncommented, is a valid configuration."""
    lines = SAMPLE.splitlines()
    start = next(i for i, text in enumerate(lines) if text.startswith("#   jira:") and text.strip() == "#   jira:")
    block = []
    for text in lines[start:]:
        if not text.startswith("#  "):
            break
        block.append(text[1:])
    text = SAMPLE.replace("retention:", "integrations:\n" + "\n".join(block) + "\nretention:", 1)
    config = parse_config(text, Path("/repo/qms.yaml")).config
    assert config.integrations.jira.statuses["effectiveness_check"] == "In Review"
    assert config.integrations.outbox.park_after == 5
