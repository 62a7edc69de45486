"""Every sentence a scaffolded procedure says about qmsflow is backed by the code (issue: truthful procedures).

- Each procedure renders; a capability name nobody declares fails the rendering.
- Outside declared capability statements, a sentence may mention qmsflow only to say what it does *not*
  do, or as a plainly marked manual step.
- Every ``qms …`` command a procedure (or a capability statement) names exists, with the options it names.
- Every capability names tests that exist, so a statement cannot outlive the behaviour that proves it.
- The procedure files hold the organisation-specific parts as placeholders, filled from qms.yaml.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from qmsflow.domain import capabilities, procedure_text
from qmsflow.scaffold import (
    CLAIM_CLOSE,
    CLAIM_OPEN,
    MANUAL,
    environment,
    fill_document,
    load_capabilities,
    render_document,
)
from qmsflow.settings import parse_config

ROOT = Path(__file__).resolve().parents[2]
NEGATIVE = re.compile(
    r"qmsflow (does not|doesn't|cannot|can't|never|has no|holds no|keeps no|sends no|records no|checks no)"
    r"|not (in|by|through|from) qmsflow|outside qmsflow|without qmsflow|qmsflow or (elsewhere|outside)",
    re.IGNORECASE,
)
COMMAND = re.compile(r"`(qms(?: [^`]*)?)`")


@pytest.fixture(scope="module")
def config():
    text = environment().get_template("scaffold/qms.yaml.j2").render(org_name="Truth GmbH", trusted_single_user=False)
    return parse_config(text, ROOT / "qms.yaml").config


@pytest.fixture(scope="module")
def marked(config) -> dict[str, str]:
    return {d.id: render_document(config, d.id, mark=True) for d in config.documents}


def _sentences(text: str) -> list[str]:
    out = []
    for block in re.split(r"\n\s*\n|\n(?=\s*(?:[-*] |\d+\. |\||#))", text):
        out.extend(s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z`(*])", " ".join(block.split())) if s.strip())
    return out


def test_every_procedure_renders_and_fills(config, marked) -> None:
    assert len(marked) == len(config.documents) >= 10
    for doc in config.documents:
        text = render_document(config, doc.id)
        assert procedure_text.has_placeholders(text), doc.id  # organisation-specific parts stay placeholders
        filled = fill_document(config, doc.id, text, doc.path)
        assert not procedure_text.has_placeholders(filled)
        assert "Truth GmbH" in filled and "{{" not in filled, doc.id


def test_an_unknown_capability_fails_the_rendering(config, tmp_path: Path) -> None:
    env = environment()
    context = __import__("qmsflow.scaffold", fromlist=["document_context"]).document_context(config, "SOP-CAPA-001")
    with pytest.raises(capabilities.UnknownCapability, match="capa.does_everything"):
        env.from_string('{{ qmsflow_does("capa.does_everything") }}').render(**context)


def test_no_sentence_claims_what_qmsflow_does_outside_a_declared_capability(marked) -> None:
    unbacked = []
    for doc_id, text in marked.items():
        outside = re.sub(f"{CLAIM_OPEN}.*?{CLAIM_CLOSE}", " [capability] ", text, flags=re.S)
        for sentence in _sentences(outside):
            if "qmsflow" not in sentence.lower() or MANUAL in sentence or NEGATIVE.search(sentence):
                continue
            unbacked.append(f"{doc_id}: {sentence[:200]}")
    assert not unbacked, "sentences about qmsflow that no capability backs:\n" + "\n".join(unbacked)


def _cli():  # noqa: ANN202 - typer's own click command classes
    from qmsflow.cli.main import app

    return typer.main.get_command(app)


def _check_command(group, words: list[str]) -> str | None:  # noqa: ANN001
    command = group
    path = ["qms"]
    rest = list(words)
    while rest and hasattr(command, "commands"):
        word = rest[0]
        if word.startswith("-") or word.isupper() or not re.match(r"^[a-z][a-z-]*$", word):
            break
        sub = command.commands.get(word)
        if sub is None:
            return f"`{' '.join(path + [word])}` is not a command"
        command, path, rest = sub, path + [word], rest[1:]
    if hasattr(command, "commands") and len(path) > 1 and not rest:
        return None  # a group named on its own ("`qms capa`")
    options = {o for p in command.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
    for word in rest:
        option = word.split("=")[0]
        if option.startswith("--") and option not in options:
            return f"`{' '.join(path)}` has no option {option}"
    return None


def test_every_named_command_exists(config, marked) -> None:
    group = _cli()
    wrong = []
    texts = dict(marked)
    texts.update({f"capability {c.name}": c.statement for c in load_capabilities().values()})
    for where, text in texts.items():
        for match in COMMAND.finditer(text):
            words = match.group(1).replace("…", " ").split()[1:]
            problem = _check_command(group, words)
            if problem:
                wrong.append(f"{where}: {problem}")
    assert not wrong, "\n".join(wrong)


def test_every_capability_names_tests_that_exist() -> None:
    declared = load_capabilities()
    assert len(declared) >= 20
    missing = []
    for capability in declared.values():
        for node in capability.proved_by:
            file, _, name = node.partition("::")
            path = ROOT / file
            if not path.is_file() or not re.search(rf"^\s*(async )?def {re.escape(name)}\(", path.read_text(), re.M):
                missing.append(f"{capability.name}: {node}")
    assert not missing, "capabilities proved by tests that do not exist:\n" + "\n".join(missing)


def test_every_declared_capability_is_used_by_a_procedure(config, marked) -> None:
    """A declaration no procedure cites is dead text: cite it or remove it."""
    used = set(
        re.findall(
            r'qmsflow_(?:does|keeps)\("([^"]+)"\)',
            "".join(p.read_text() for p in (ROOT / "templates" / "documents").glob("*.md.j2")),
        )
    )
    unused = sorted(set(load_capabilities()) - used)
    assert not unused, f"declared but cited by no procedure: {', '.join(unused)}"


def test_manual_steps_are_marked_plainly(config) -> None:
    from qmsflow.scaffold import document_context

    context = document_context(config, "SOP-CAPA-001")
    assert context["manual"]("Keep the  supplier\nregister.") == f"{MANUAL} Keep the supplier register."


def test_the_command_check_catches_a_wrong_command_or_option() -> None:
    group = _cli()
    assert _check_command(group, ["capa", "advance", "CAPA_ID", "--to", "closed"]) is None
    assert _check_command(group, ["capa", "fly"]) == "`qms capa fly` is not a command"
    assert _check_command(group, ["capa", "advance", "--nope"]) == "`qms capa advance` has no option --nope"
