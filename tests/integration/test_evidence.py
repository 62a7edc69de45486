"""Records verified against the trail: every tamper case as the test, on SQLite and PostgreSQL.

A store is filled through the services (people, processes, documents and versions, a CAPA, a signed
approval request and a second one on the same content, a web account, an API token), then edited
behind qmsflow's back the way an administrator with SQL access could; ``verify`` must say what
changed, by table, id and field. Also: the trail's own tamper cases (a middle event deleted, the
tail deleted with and without anchors, rows swapped, a trigger dropped, REPLACE and upserts), the
anchors file rewritten in the working tree and in a new commit, and the unit of work refusing to
commit a change that its trail events do not hold.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import identityutil
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from qmsflow.context import QmsContext, open_context
from qmsflow.domain.approvals import Decision
from qmsflow.domain.documents import DocStatus
from qmsflow.domain.trail import GENESIS, make_event
from qmsflow.services import approvals, capa, tokens
from qmsflow.services.documents import transition_version
from qmsflow.services.sync import sync_config
from qmsflow.services.verify import VerifyResult, anchor, verify
from qmsflow.store import UnitOfWork, guards, trail
from qmsflow.store.state import StateNotRecorded, state_of
from qmsflow.store.tables import ApiTokenRow, DocumentVersionRow, PersonRow, RecordRow, SignatureRow

ROOT_CAUSE = {
    "method": "5 whys",
    "cause": "Label drift in batch 12",
    "similar_cases": {"checked": True, "scope": "batches 1-20", "found": []},
}


@dataclass
class World:
    ctx: QmsContext
    capa: str
    signed: str  # an approved request with one signature
    twin: str  # a pending request over the same content
    token: int

    @property
    def db(self):  # noqa: ANN201
        return self.ctx.db

    def sql(self, statement: str, **params: object) -> list:
        """Raw SQL on the store, behind qmsflow's back (an administrator with a SQL console)."""
        with self.db.engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return result.all() if result.returns_rows else []

    def json_param(self, name: str) -> str:
        return f":{name}" if self.db.is_sqlite else f"CAST(:{name} AS JSON)"

    def verify(self) -> VerifyResult:
        return verify(self.db, self.ctx.anchors_file, root=self.ctx.root)

    def events(self) -> int:
        with self.db.read() as s:
            return trail.count(s)


def fill(ctx: QmsContext) -> World:
    config = ctx.config
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        sync_config(uow, config, ctx.root)
        uow.commit()
        version = uow.session.scalar(select(DocumentVersionRow).where(DocumentVersionRow.document_id == "SOP-AUD-001"))
        transition_version(uow, version, DocStatus.IN_REVIEW)
        uow.commit()
        digest = version.content_sha256
    with UnitOfWork(ctx.db, "dev") as uow:
        row = capa.open_capa(uow, config, title="Mislabelled training data", source="audit", owner="dev")
        uow.commit()
        capa_id = row.id
        capa.advance(uow, config, capa_id, "containment", {"correction": "Model rolled back to v1.3"})
        uow.commit()
        capa.advance(uow, config, capa_id, "root_cause", ROOT_CAUSE)
        uow.commit()
    with UnitOfWork(ctx.db, "ana") as uow:
        signed_id, twin_id = (  # two requests over the same content
            approvals.open_request(
                uow,
                config,
                key=f"test:{name}",
                subject="document-version:SOP-AUD-001@1.0",
                title=f"SOP-AUD-001 v1.0 ({name})",
                content_sha256=digest,
                approvers=["ben", "chloe"],
                meaning="approve SOP-AUD-001 v1.0 for use",
                author="ana",
            )[0].id
            for name in ("signed", "twin")
        )
        uow.commit()
    with UnitOfWork(ctx.db, "ben") as uow:
        identityutil.sign(uow, config, signed_id, "ben", Decision.APPROVE, "fine")
    identityutil.token(ctx.db, "ana")
    with ctx.db.read() as s:
        token = s.scalar(select(ApiTokenRow.id))
    return World(ctx, capa_id, signed_id, twin_id, token)


def _world(repo: Path, monkeypatch: pytest.MonkeyPatch, url: str | None) -> Iterator[World]:
    if url:
        monkeypatch.setenv("QMS_DATABASE_URL", url)
    else:
        monkeypatch.delenv("QMS_DATABASE_URL", raising=False)
    ctx = open_context(repo / "qms.yaml", migrate=True)
    yield fill(ctx)
    ctx.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, repo: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    pg = request.getfixturevalue("pg_schema_url") if request.param == "postgresql" else None
    yield from _world(repo, monkeypatch, pg)


@pytest.fixture
def pg_world(repo: Path, pg_schema_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    yield from _world(repo, monkeypatch, pg_schema_url)


def problems(result: VerifyResult) -> str:
    return "\n".join(
        [str(result.report.broken or "")]
        + result.guard_problems
        + result.head_problems
        + result.anchor_problems
        + result.state_problems
        + result.signature_problems
        + result.seal_problems
    )


def test_a_store_written_by_the_services_verifies_state_included(world: World) -> None:
    result = world.verify()
    assert result.ok, problems(result)
    tables = result.state.by_table
    assert (
        tables["records"] == 3 and tables["signatures"] == 1 and tables["users"] == 2
    )  # the CAPA and the two AI systems' lifecycle records; users: ben, and ana (token)
    assert tables["api_tokens"] == 1 and tables["approval_requests"] == 2 and tables["people"] == 4
    assert result.state.rows == sum(tables.values())


# ------------------------------------------------------------------ record tables edited behind qmsflow's back

EDITS = {
    "people": ("UPDATE people SET email = 'ana@evil.example' WHERE id = 'ana'", "people ana email"),
    "processes": ("UPDATE processes SET owner = 'dev' WHERE key = 'capa'", "processes capa owner"),
    "documents": (
        "UPDATE documents SET title = 'Nothing to see' WHERE id = 'SOP-DOC-001'",
        "documents SOP-DOC-001 title",
    ),
    "document_versions": (
        "UPDATE document_versions SET status = 'effective' WHERE document_id = 'SOP-AUD-001'",
        'document_versions SOP-AUD-001@1.0 status: the trail says "in_review"',
    ),
    "approval_requests": (
        "UPDATE approval_requests SET required = 1 WHERE key = 'test:twin'",
        "approval_requests {twin} required: the trail says 2",
    ),
    "signatures": (
        "UPDATE signatures SET printed_name = 'Chloe Someone'",
        "signatures #",
    ),
    "users": ("UPDATE users SET role = 'admin' WHERE username = 'ben'", "users ben role"),
    "api_tokens": ("UPDATE api_tokens SET person = 'ben'", "api_tokens {token} person"),
}


@pytest.mark.parametrize("table", sorted(EDITS))
def test_an_edited_field_of_each_record_table_is_reported_by_table_id_and_field(world: World, table: str) -> None:
    statement, expected = EDITS[table]
    assert world.verify().ok
    world.sql(statement)
    result = world.verify()
    assert not result.ok and result.report.ok
    expected = expected.format(twin=world.twin, token=world.token)
    assert any(expected in p for p in result.state_problems), result.state_problems


def test_an_edited_capa_root_cause_is_reported_with_its_path(world: World) -> None:
    [(data,)] = world.sql("SELECT data FROM records WHERE id = :id", id=world.capa)
    data = data if isinstance(data, dict) else json.loads(data)
    data["stages"]["root_cause"]["cause"] = "Nobody could have known"
    world.sql(
        f"UPDATE records SET data = {world.json_param('data')} WHERE id = :id", data=json.dumps(data), id=world.capa
    )
    result = world.verify()
    assert result.state_problems == [
        f'records {world.capa} data.stages.root_cause.cause: the trail says "Label drift in batch 12" '
        f'(seq {_last_seq(world, f"record:{world.capa}")}), the table holds "Nobody could have known"'
    ]


def _last_seq(world: World, ref: str) -> int:
    with world.db.read() as s:
        return trail.events_for(s, ref)[-1].seq


def test_a_row_without_trail_history_is_reported(world: World) -> None:
    world.sql(
        "INSERT INTO records (id, kind, key, title, status, owner, process, due_date, systems, data, links, "
        "created_at, updated_at) VALUES ('CAPA-2026-9999', 'capa', NULL, 'Planted', 'closed', 'dev', 'capa', NULL, "
        f"{world.json_param('empty')}, {world.json_param('obj')}, {world.json_param('empty')}, :now, :now)",
        empty="[]",
        obj="{}",
        now=datetime.now(UTC).replace(tzinfo=None),
    )
    assert "records CAPA-2026-9999: the row has no trail history" in problems(world.verify())


def test_a_deleted_row_is_reported_as_missing(world: World) -> None:
    world.sql("DELETE FROM api_tokens")
    result = world.verify()
    assert any(
        p.startswith(f"api_tokens {world.token}: the trail says it exists (seq ") and p.endswith("no such row")
        for p in result.state_problems
    ), result.state_problems


def test_values_swapped_between_two_rows_are_reported_on_both(world: World) -> None:
    world.sql(
        "UPDATE people SET email = CASE id WHEN 'ana' THEN 'ben@example.com' ELSE 'ana@example.com' END "
        "WHERE id IN ('ana', 'ben')"
    )
    found = problems(world.verify())
    assert "people ana email" in found and "people ben email" in found


@pytest.mark.parametrize("how", ["moved", "copied"])
def test_a_signature_moved_or_copied_onto_another_request_with_the_same_content_fails(world: World, how: str) -> None:
    if how == "moved":
        world.sql("UPDATE signatures SET request_id = :twin", twin=world.twin)
    else:
        world.sql(
            "INSERT INTO signatures (request_id, signer, printed_name, at, meaning, decision, comment, method, "
            "content_sha256, trail_seq) SELECT :twin, signer, printed_name, at, meaning, decision, comment, method, "
            "content_sha256, trail_seq FROM signatures",
            twin=world.twin,
        )
    result = world.verify()
    assert not result.ok
    found = problems(result)
    if how == "moved":
        assert f'request_id: the trail says "{world.signed}"' in found and f'the table holds "{world.twin}"' in found
    else:
        assert f"(on {world.twin}): trail_seq" in found  # two rows cannot hold one signature event


# ------------------------------------------------------------------ the trail itself


def drop_guards(world: World) -> None:
    if world.db.is_sqlite:
        for name in guards.SQLITE:
            world.sql(f"DROP TRIGGER {name}")
    else:
        for name, (table, _) in guards.POSTGRES_TRIGGERS.items():
            world.sql(f"DROP TRIGGER {name} ON {table}")


def test_a_deleted_middle_event_is_a_gap_and_states_are_not_trusted(world: World) -> None:
    drop_guards(world)
    world.sql("DELETE FROM trail_events WHERE seq = 5")
    result = world.verify()
    assert (result.report.broken.seq, result.report.broken.problem) == (5, "gap")
    assert "record states not checked: the chain is broken" in result.notes
    assert result.guard_problems  # the dropped triggers are reported too


@pytest.mark.parametrize("anchored", [False, True], ids=["verified-head", "anchor"])
def test_a_deleted_tail_is_caught_by_every_earlier_head(world: World, anchored: bool) -> None:
    if anchored:
        anchor(world.db, world.ctx.anchors_file)
    else:
        assert world.verify().ok  # a verification is a witness of the head it saw
    head = world.events()
    drop_guards(world)
    world.sql("DELETE FROM trail_events WHERE seq > :keep", keep=head - 3)
    with world.db.engine.begin() as conn:
        guards.install(conn)  # and the triggers put back, so that nothing else shows
    result = world.verify()
    assert result.report.ok and not result.ok
    found = result.anchor_problems if anchored else result.head_problems
    assert found and f"saw the trail at seq {head}, but the trail now ends at seq {head - 3}" in found[0]


def test_swapped_events_break_the_chain_at_the_first(world: World) -> None:
    drop_guards(world)
    world.sql("UPDATE trail_events SET seq = -1 WHERE seq = 7")
    world.sql("UPDATE trail_events SET seq = 7 WHERE seq = 8")
    world.sql("UPDATE trail_events SET seq = 8 WHERE seq = -1")
    broken = world.verify().report.broken
    assert (broken.seq, broken.problem) == (7, "link broken")


def _expected_triggers(world: World) -> list[str]:
    return list(guards.SQLITE) if world.db.is_sqlite else list(guards.POSTGRES_TRIGGERS)


@pytest.mark.parametrize("index", [0, 1, 2, 3, 4])  # the trail's three, then the verifications' two
def test_a_dropped_trigger_fails_verify_and_db_upgrade_reinstalls_it_with_an_event(world: World, index: int) -> None:
    name = _expected_triggers(world)[index]
    table = "" if world.db.is_sqlite else f" ON {guards.POSTGRES_TRIGGERS[name][0]}"
    world.sql(f"DROP TRIGGER {name}{table}")
    result = world.verify()
    assert not result.ok and result.guard_problems == [f"append-only trigger {name} is missing"]
    assert world.db.repair_guards() == [f"append-only trigger {name} is missing"]
    with world.db.read() as s:
        [event] = trail.events_for(s, "store:trail")[-1:]
    assert event.action == "store.guards-reinstalled" and name in event.after_json
    again = world.verify()
    assert again.ok and "append-only triggers were found missing and reinstalled" in again.notes[0]
    assert world.db.repair_guards() == []  # nothing to repair twice


def test_a_disabled_trigger_is_reported_on_postgres(pg_world: World) -> None:  # SQLite cannot disable one
    world = pg_world
    world.sql("ALTER TABLE trail_events DISABLE TRIGGER trail_events_no_update_delete")
    assert world.verify().guard_problems == ["append-only trigger trail_events_no_update_delete is disabled"]
    world.db.repair_guards()
    with pytest.raises(DBAPIError, match="append-only"):
        world.sql("DELETE FROM trail_events WHERE seq = 1")


def test_an_altered_trigger_is_reported(world: World) -> None:
    if world.db.is_sqlite:
        world.sql("DROP TRIGGER trail_events_no_delete")
        world.sql("CREATE TRIGGER trail_events_no_delete BEFORE DELETE ON trail_events BEGIN SELECT 1; END")
        expected = "append-only trigger trail_events_no_delete is altered"
    else:
        world.sql(
            "CREATE OR REPLACE FUNCTION qms_trail_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RETURN OLD; END $$"
        )
        expected = "append-only trigger function qms_trail_append_only() is altered"
    assert world.verify().guard_problems == [expected]


def _rewritten_events(world: World, start: int) -> list[dict]:
    """The issue's attack: event ``start`` re-attributed to another person, every later hash recomputed."""
    with world.db.read() as s:
        rows = list(trail.iter_rows(s))
    events = [json.loads(canonical) for _, canonical, _ in rows]
    prev = rows[start - 2][2] if start > 1 else GENESIS
    out = []
    for data in events[start - 1 :]:
        actor = "mallory" if data["seq"] == start else data["actor"]
        ts = datetime.strptime(data["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        event = make_event(data["seq"], ts, actor, data["action"], data["record"], data["before"], data["after"], prev)
        out.append({"seq": event.seq, "canonical": event.canonical().decode(), "hash": event.hash})
        prev = event.hash
    return out


@pytest.mark.parametrize("attack", ["replace", "upsert"])
def test_replace_and_upsert_into_the_trail_are_refused(world: World, attack: str) -> None:
    head = world.events()
    start = head - 5
    rewritten = _rewritten_events(world, start)
    if attack == "replace":
        statement = "REPLACE INTO" if world.db.is_sqlite else "INSERT INTO"
        suffix = "" if world.db.is_sqlite else " ON CONFLICT (seq) DO NOTHING"
        statement = f"{statement} trail_events (seq, canonical, hash) VALUES (:seq, :canonical, :hash){suffix}"
    else:
        statement = (
            "INSERT INTO trail_events (seq, canonical, hash) VALUES (:seq, :canonical, :hash) "
            "ON CONFLICT (seq) DO UPDATE SET canonical = excluded.canonical, hash = excluded.hash"
        )
    for row in rewritten:
        with pytest.raises(DBAPIError, match="append-only"):
            world.sql(statement, **row)
    if world.db.is_sqlite:  # also INSERT OR REPLACE with the head's next seq but an existing hash
        with pytest.raises(DBAPIError, match="append-only"):
            world.sql(
                "INSERT OR REPLACE INTO trail_events (seq, canonical, hash) VALUES (:seq, :canonical, :hash)",
                **{**rewritten[-1], "seq": head + 1},
            )
    result = world.verify()
    assert result.ok and result.report.head_seq == head, problems(result)
    with world.db.read() as s:
        assert "mallory" not in {e.actor for e in trail.events_for(s, f"record:{world.capa}")}


def test_appending_anything_but_the_next_event_is_refused(world: World) -> None:
    head = world.events()
    forged = make_event(head + 2, datetime.now(UTC), "mallory", "x.y", "test:x", None, 1, GENESIS)
    with pytest.raises(DBAPIError, match="append-only"):
        world.sql(
            "INSERT INTO trail_events (seq, canonical, hash) VALUES (:seq, :canonical, :hash)",
            seq=forged.seq,
            canonical=forged.canonical().decode(),
            hash=forged.hash,
        )


# ------------------------------------------------------------------ the anchors file rewritten


@pytest.fixture
def git_world(world: World) -> World:
    """The same world in a compliance repo that is a git repo, anchored twice."""
    root = world.ctx.root
    subprocess.run(["git", "-C", str(root), "init", "-q"], check=True)
    done = anchor(world.db, world.ctx.anchors_file)
    assert done.git_repo and done.commit
    with UnitOfWork(world.db, "dev") as uow:
        capa.advance(
            uow,
            world.ctx.config,
            world.capa,
            "action_plan",
            {"actions": [{"what": "a", "owner": "dev", "due": "2027-01-01"}]},
        )
        uow.commit()
    second = anchor(world.db, world.ctx.anchors_file)
    assert second.commit and second.commit != done.commit
    assert world.verify().ok
    return world


@pytest.mark.parametrize("where", ["working tree", "new commit"])
def test_a_rewritten_anchors_file_is_reported(git_world: World, where: str) -> None:
    path = git_world.ctx.anchors_file
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "anchored_at": "2020-01-01T00:00:00.000000Z"}, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")
    if where == "new commit":
        subprocess.run(["git", "-C", str(path.parent), "commit", "-qam", "tidy anchors"], check=True)
    found = git_world.verify().anchor_problems
    if where == "working tree":
        assert found == [
            "records/trail-anchors.jsonl: the working tree copy differs from the committed one at line 1: "
            "anchors were rewritten"
        ]
    else:
        assert len(found) == 1 and "changed or removed anchors committed before it" in found[0]


def test_anchors_removed_from_the_file_are_still_checked_from_git(git_world: World) -> None:
    path = git_world.ctx.anchors_file
    path.write_text("")
    drop_guards(git_world)
    git_world.sql("DELETE FROM trail_events WHERE seq > 3")
    result = git_world.verify()
    assert any("saw the trail at seq" in p and "(commit " in p for p in result.anchor_problems), result.anchor_problems


# ------------------------------------------------------------------ fail closed: the unit of work refuses


def _silent_title(uow: UnitOfWork, world: World) -> None:
    uow.session.get(RecordRow, world.capa).title = "Quietly renamed"


def _partial_event(uow: UnitOfWork, world: World) -> None:
    row = uow.session.get(RecordRow, world.capa)
    row.title = "Renamed"
    uow.record("capa.renamed", f"record:{world.capa}", None, {"title": "Renamed"})


def _undeclared_note(uow: UnitOfWork, world: World) -> None:
    uow.record("capa.looked-at", f"record:{world.capa}", None, {"by": "dev"})


def _delete_without_event(uow: UnitOfWork, world: World) -> None:
    uow.session.delete(uow.session.get(ApiTokenRow, world.token))


def _core_update(uow: UnitOfWork, world: World) -> None:
    from sqlalchemy import update

    uow.session.execute(update(PersonRow).where(PersonRow.id == "ana").values(email="x@example.com"))


def _signature_changed(uow: UnitOfWork, world: World) -> None:
    sig = uow.session.scalar(select(SignatureRow))
    before = state_of(sig)
    sig.comment = "edited"
    uow.record("approval.signed", f"approval:{world.signed}", before, state_of(sig))


def _event_after_a_later_change(uow: UnitOfWork, world: World) -> None:
    row = uow.session.get(PersonRow, "dev")
    before = state_of(row)
    row.name = "Dev One"
    uow.record("person.updated", "person:dev", before, state_of(row))
    row.email = "dev@elsewhere.example"  # changed again after its event


SILENT = {
    "attribute set without an event": _silent_title,
    "event without the full state": _partial_event,
    "undeclared note on a record": _undeclared_note,
    "row deleted without an event": _delete_without_event,
    "Core UPDATE in a unit of work": _core_update,
    "signature changed": _signature_changed,
    "row changed after its event": _event_after_a_later_change,
}


@pytest.mark.parametrize("case", sorted(SILENT))
def test_a_unit_of_work_refuses_to_commit_a_change_its_events_do_not_hold(world: World, case: str) -> None:
    count = world.events()
    before = world.sql("SELECT title FROM records") + world.sql("SELECT email, name FROM people ORDER BY id")
    with pytest.raises(StateNotRecorded, match="refusing"):
        with UnitOfWork(world.db, "dev") as uow:
            SILENT[case](uow, world)
            uow.commit()
    assert world.events() == count
    assert world.sql("SELECT title FROM records") + world.sql("SELECT email, name FROM people ORDER BY id") == before
    assert world.verify().ok


def test_a_record_row_changes_only_in_a_unit_of_work_but_operational_columns_may(world: World) -> None:
    with pytest.raises(StateNotRecorded, match="outside a unit"), world.db.session() as session, session.begin():
        session.get(PersonRow, "ana").email = "ana@elsewhere.example"
    token = identityutil.token(world.db, "ana")
    assert tokens.authenticate(world.db, token, source="test").person == "ana"  # last_used_at: operational
    assert world.verify().ok


def test_a_change_with_its_full_state_event_commits(world: World) -> None:
    with UnitOfWork(world.db, "qmsflow") as uow:
        row = uow.session.get(PersonRow, "dev")
        before = state_of(row)
        row.name = "Dev Eloper"
        uow.record("person.updated", "person:dev", before, state_of(row))
        uow.commit()
    assert world.verify().ok


# ------------------------------------------------------------------ anchored from the start


def test_qms_init_anchors_the_trail_at_once_in_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qmsflow.cli.main import run

    monkeypatch.delenv("QMS_DATABASE_URL", raising=False)
    repo = tmp_path / "new"
    assert run(["init", str(repo), "--org", "Witness AI"]) == 0
    [line] = (repo / "records" / "trail-anchors.jsonl").read_text().splitlines()
    assert json.loads(line)["seq"] == 2  # store.initialised, then store.anchored (the file it is anchored in)
    log = subprocess.run(["git", "-C", str(repo), "log", "--format=%s"], capture_output=True, text=True).stdout
    assert log.splitlines() == ["Anchor the audit trail at seq 2", "Scaffold the QMS with qmsflow"]


def test_a_failed_verification_does_not_lower_the_witnessed_head(world: World) -> None:
    assert world.verify().ok
    head = world.events()
    drop_guards(world)
    world.sql("DELETE FROM trail_events WHERE seq = :head", head=head)
    first = world.verify()
    second = world.verify()  # the failed verification did not lower the witness
    assert not first.ok and not second.ok and second.head_problems == first.head_problems


def test_verify_compares_one_moment_while_others_keep_writing(world: World) -> None:
    """A change committed after verify read the trail, before it read the tables, is not tampering."""
    committed = []

    def write_in_between(rows):  # noqa: ANN001, ANN202 - verify's progress hook: runs once the trail is read
        yield from rows
        with UnitOfWork(world.db, "dev") as uow:  # another connection, committed meanwhile
            capa.advance(
                uow,
                world.ctx.config,
                world.capa,
                "action_plan",
                {"actions": [{"what": "Add a label audit", "owner": "dev", "due": "2027-01-01"}]},
            )
            uow.commit()
        committed.append(True)

    result = verify(world.db, world.ctx.anchors_file, progress=write_in_between, root=world.ctx.root)
    assert committed and result.ok, problems(result)
    assert world.verify().ok  # and the next verification sees the change and its events
