"""Migration 0008 (the trail stores each event's canonical form) keeps every hash, on SQLite and PostgreSQL.

A store at revision 0005 is written the way qmsflow wrote it before (events in columns, some changes
without a full-state event, JSON columns in json.dumps' default format), then upgraded: every event
keeps its seq and hash and hashes to it as stored, the generated columns say what the old columns
said, an edited event is still reported at its seq, and what the old trail did not hold in full is
adopted once, visibly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from qmsflow.domain.trail import GENESIS, make_event, parse_event
from qmsflow.services.verify import verify
from qmsflow.store import Database, trail

T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
OLD_COLUMNS = "seq, ts, actor, action, record, before_json, after_json, prev_hash, hash"


@pytest.fixture
def old_db(db_url: str) -> Iterator[Database]:
    """A store at revision 0005, the schema before the canonical form."""
    from alembic import command

    database = Database(db_url)
    with database.engine.begin() as conn:
        cfg = database._alembic()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
    yield database
    database.dispose()


class OldWriter:
    """Writes events and rows as qmsflow did before migration 0008 (raw SQL on the old columns)."""

    def __init__(self, db: Database):
        self.db = db
        self.prev = GENESIS
        self.seq = 0

    def event(self, actor: str, action: str, record: str, before: object, after: object) -> None:
        self.seq += 1
        e = make_event(self.seq, T0 + timedelta(minutes=self.seq), actor, action, record, before, after, self.prev)
        self.sql(
            f"INSERT INTO trail_events ({OLD_COLUMNS}) VALUES "
            "(:seq, :ts, :actor, :action, :record, :before_json, :after_json, :prev_hash, :hash)",
            seq=e.seq,
            ts=e.ts,
            actor=e.actor,
            action=e.action,
            record=e.record,
            before_json=e.before_json,
            after_json=e.after_json,
            prev_hash=e.prev_hash,
            hash=e.hash,
        )
        self.prev = e.hash

    def sql(self, statement: str, **params: object) -> list:
        with self.db.engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return result.all() if result.returns_rows else []

    def json(self, name: str) -> str:
        return f":{name}" if self.db.is_sqlite else f"CAST(:{name} AS JSON)"

    def allow_updates(self) -> None:
        """Drop the old UPDATE trigger (an administrator's first step)."""
        if self.db.is_sqlite:
            self.sql("DROP TRIGGER trail_events_no_update")
        else:
            self.sql("DROP TRIGGER trail_events_no_update_delete ON trail_events")


def write_old_store(db: Database) -> OldWriter:
    w = OldWriter(db)
    at = T0
    ana = {
        "id": "ana",
        "name": "Ana Alves",
        "email": "ana@example.com",
        "slack_id": None,
        "roles": ["quality-lead", "approver"],
        "manager": None,
        "active": True,
    }
    w.event("qmsflow", "person.created", "person:ana", None, ana)
    w.sql(
        f"INSERT INTO people VALUES ('ana', 'Ana Alves', 'ana@example.com', NULL, {w.json('roles')}, NULL, :t)",
        roles=json.dumps(ana["roles"]),  # the old engine's format: '["quality-lead", "approver"]'
        t=True,
    )
    w.event("qmsflow", "user.created", "user:ana", None, {"username": "ana", "person": "ana", "role": "admin"})
    w.sql("INSERT INTO users VALUES ('ana', 'ana', 'admin', '$argon2id$v=19$secret', :at, NULL)", at=at)
    w.event("ana", "token.created", "person:ana", None, {"token_id": 1, "name": "ci", "person": "ana"})
    w.sql("INSERT INTO api_tokens VALUES (1, 'ana', 'ci', :h, :at, NULL, NULL)", h="ab" * 32, at=at)
    title = 'Odd "title" \\ with ü, \u2028 and \x07'
    record = {
        "id": "CAPA-2026-0001",
        "kind": "capa",
        "key": None,
        "title": title,
        "status": "opened",
        "owner": "ana",
        "process": "capa",
        "due_date": "2026-04-01",
        "systems": [],
        "data": {"source": "audit", "stages": {}},
        "links": [],
        "created_at": T0.isoformat(),
        "updated_at": T0.isoformat(),
    }
    w.event("ana", "capa.created", "record:CAPA-2026-0001", None, record)
    w.sql(
        "INSERT INTO records VALUES ('CAPA-2026-0001', 'capa', NULL, :title, 'opened', 'ana', 'capa', :due, "
        f"{w.json('empty')}, {w.json('data')}, {w.json('empty')}, :at, :at)",
        title=title,
        due=datetime(2026, 4, 1).date(),
        empty="[]",
        data=json.dumps(record["data"]),
        at=at,
    )
    w.event("qmsflow", "process.run-completed", "process:capa", None, {"flow": "x", "state": "COMPLETED"})
    w.event("test", "test.noted", "test:x", {"a": [1.5, None]}, {"a": "ü"})
    # a change old qmsflow made without an event: the record's data (like follow-ups on a request)
    w.sql(
        f"UPDATE records SET data = {w.json('data')} WHERE id = 'CAPA-2026-0001'",
        data=json.dumps({**record["data"], "escalations": ["opened:2026-04-01:owner"]}),
    )
    return w


def old_events(db: Database) -> list[tuple]:
    with db.engine.connect() as conn:
        return conn.exec_driver_sql(f"SELECT {OLD_COLUMNS} FROM trail_events ORDER BY seq").all()


def test_upgrade_keeps_every_hash_and_adopts_what_the_old_trail_did_not_hold(old_db: Database) -> None:
    write_old_store(old_db)
    before = old_events(old_db)
    old_db.upgrade()
    with old_db.read() as s:
        rows = list(trail.iter_rows(s))
        generated = s.execute(text("SELECT seq, ts, actor, action, record, prev_hash FROM trail_events")).all()
    assert [(seq, digest) for seq, _, digest in rows[: len(before)]] == [(r[0], r[8]) for r in before]
    for seq, canonical, digest in rows:
        assert hashlib.sha256(canonical.encode("utf-8")).hexdigest() == digest, seq
    for old, (seq, canonical, digest) in zip(before, rows, strict=False):
        event = parse_event(seq, canonical, digest)
        assert tuple(event.__getattribute__(f) for f in ("seq", "ts", "actor", "action", "record")) == old[:5]
        assert (event.before_json, event.after_json, event.prev_hash) == old[5:8]
    assert {g[0]: tuple(g[1:]) for g in generated if g[0] <= len(before)} == {
        r[0]: (r[1], r[2], r[3], r[4], r[7]) for r in before
    }
    adopted = [parse_event(*r) for r in rows[len(before) :]]
    assert sorted((e.action, e.record, e.actor) for e in adopted) == [
        ("record.state-adopted", "record:CAPA-2026-0001", "migration:0008"),
        ("store.seals-required", "store:trail", "migration:0013"),  # signatures after it must be sealed
        ("token.state-adopted", "token:1", "migration:0008"),
        ("user.state-adopted", "user:ana", "migration:0008"),
        ("user.state-adopted", "user:ana", "migration:0013"),  # password_set_by (ADR 0018)
    ]  # the person's full state was in the trail already, in another JSON layout: nothing to adopt
    user = next(e for e in adopted if e.record == "user:ana" and e.actor == "migration:0008")
    assert json.loads(user.before_json) == {"username": "ana", "person": "ana", "role": "admin"}
    assert json.loads(user.after_json)["password_hash_sha256"] == hashlib.sha256(b"$argon2id$v=19$secret").hexdigest()
    assert "argon2" not in user.after_json  # never a secret in the trail
    capa = next(e for e in adopted if e.record == "record:CAPA-2026-0001")
    assert json.loads(capa.after_json)["data"]["escalations"] == ["opened:2026-04-01:owner"]
    result = verify(old_db, None)
    assert result.ok, result.problem
    assert result.state.by_table["people"] == 1 and result.state.by_table["records"] == 1


def test_an_event_edited_before_the_upgrade_is_still_reported_at_its_seq(old_db: Database) -> None:
    w = write_old_store(old_db)
    w.allow_updates()
    w.sql("UPDATE trail_events SET actor = 'mallory' WHERE seq = 4")
    hashes = [(r[0], r[8]) for r in old_events(old_db)]
    old_db.upgrade()
    with old_db.read() as s:
        rows = list(trail.iter_rows(s))
    assert [(seq, digest) for seq, _, digest in rows[: len(hashes)]] == hashes  # no hash changed, nothing adopted
    assert [parse_event(*row).action for row in rows[len(hashes) :]] == ["store.seals-required"]
    broken = verify(old_db, None).report.broken
    assert (broken.seq, broken.problem) == (4, "content changed")


def test_an_event_edited_into_invalid_json_stops_the_upgrade_with_a_clear_error(old_db: Database) -> None:
    w = write_old_store(old_db)
    w.allow_updates()
    w.sql("UPDATE trail_events SET after_json = '{\"unclosed\": ' WHERE seq = 2")
    with pytest.raises(RuntimeError, match="trail event seq 2 was edited into text that is not JSON"):
        old_db.upgrade()
    assert old_db.current_revision() == "0005"  # nothing half-done
