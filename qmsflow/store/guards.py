"""The append-only guards of the audit trail (and of the verifications' witnessed heads): database
triggers, checked and reinstalled.

Triggers refuse UPDATE and DELETE of trail events (and TRUNCATE on PostgreSQL) and admit an
INSERT only of the next event after the head: its seq is the head's plus one, its canonical form
names the head's hash as ``prev_hash`` (PostgreSQL: and its own seq; ``qms verify`` checks that on
both), and (SQLite) its hash is new. That rule is what stops SQLite's ``INSERT OR REPLACE`` and
upserts, whose REPLACE deletes the conflicting row without firing delete triggers: the BEFORE
INSERT trigger fires first and refuses any row that is not the next one.

Triggers stop mistakes and casual edits, not a database owner, who can drop them. So
``qms verify`` fails while one is missing, disabled or altered (``check``), and ``qms db
upgrade`` / ``qms up`` reinstall it (``ensure``) and record that they did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Connection, text

from ..domain.trail import GENESIS

REFUSED = "trail_events is append-only"
VERIFICATIONS_REFUSED = "verifications is append-only"  # every head a verification saw is a witness (0013)

SQLITE = {
    "trail_events_no_update": f"""CREATE TRIGGER trail_events_no_update BEFORE UPDATE ON trail_events
BEGIN SELECT RAISE(ABORT, '{REFUSED}: UPDATE refused'); END""",
    "trail_events_no_delete": f"""CREATE TRIGGER trail_events_no_delete BEFORE DELETE ON trail_events
BEGIN SELECT RAISE(ABORT, '{REFUSED}: DELETE refused'); END""",
    # NEW.prev_hash is the generated column, computed from NEW.canonical before BEFORE triggers run
    "trail_events_append_at_head": f"""CREATE TRIGGER trail_events_append_at_head BEFORE INSERT ON trail_events
WHEN NEW.seq IS NOT (SELECT coalesce(max(seq), 0) + 1 FROM trail_events)
  OR NEW.prev_hash IS NOT coalesce((SELECT hash FROM trail_events WHERE seq = NEW.seq - 1), '{GENESIS}')
  OR EXISTS (SELECT 1 FROM trail_events WHERE hash = NEW.hash)
BEGIN SELECT RAISE(ABORT, '{REFUSED}: only the next event after the head may be inserted \
(INSERT OR REPLACE and upserts are refused)'); END""",
    "verifications_no_update": f"""CREATE TRIGGER verifications_no_update BEFORE UPDATE ON verifications
BEGIN SELECT RAISE(ABORT, '{VERIFICATIONS_REFUSED}: UPDATE refused'); END""",
    "verifications_no_delete": f"""CREATE TRIGGER verifications_no_delete BEFORE DELETE ON verifications
BEGIN SELECT RAISE(ABORT, '{VERIFICATIONS_REFUSED}: DELETE refused'); END""",
}

POSTGRES_FUNCTIONS = {
    "qms_trail_append_only": f"""
BEGIN
    RAISE EXCEPTION '{REFUSED}: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END""",
    "qms_verifications_append_only": f"""
BEGIN
    RAISE EXCEPTION '{VERIFICATIONS_REFUSED}: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END""",
    "qms_trail_append_at_head": f"""
DECLARE
    head_seq bigint;
    head_hash text;
BEGIN
    SELECT seq, hash INTO head_seq, head_hash FROM trail_events ORDER BY seq DESC LIMIT 1;
    IF NEW.seq IS DISTINCT FROM coalesce(head_seq, 0) + 1
       OR (NEW.canonical::json ->> 'seq')::bigint IS DISTINCT FROM NEW.seq
       OR (NEW.canonical::json ->> 'prev_hash') IS DISTINCT FROM coalesce(head_hash, '{GENESIS}') THEN
        RAISE EXCEPTION '{REFUSED}: only the next event after the head may be inserted'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END""",
}

POSTGRES_TRIGGERS = {  # name -> (table, definition)
    "trail_events_no_update_delete": (
        "trail_events",
        "CREATE TRIGGER trail_events_no_update_delete BEFORE UPDATE OR DELETE ON trail_events "
        "FOR EACH ROW EXECUTE FUNCTION qms_trail_append_only()",
    ),
    "trail_events_no_truncate": (
        "trail_events",
        "CREATE TRIGGER trail_events_no_truncate BEFORE TRUNCATE ON trail_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION qms_trail_append_only()",
    ),
    "trail_events_append_at_head": (
        "trail_events",
        "CREATE TRIGGER trail_events_append_at_head BEFORE INSERT ON trail_events "
        "FOR EACH ROW EXECUTE FUNCTION qms_trail_append_at_head()",
    ),
    "verifications_no_update_delete": (
        "verifications",
        "CREATE TRIGGER verifications_no_update_delete BEFORE UPDATE OR DELETE ON verifications "
        "FOR EACH ROW EXECUTE FUNCTION qms_verifications_append_only()",
    ),
    "verifications_no_truncate": (
        "verifications",
        "CREATE TRIGGER verifications_no_truncate BEFORE TRUNCATE ON verifications "
        "FOR EACH STATEMENT EXECUTE FUNCTION qms_verifications_append_only()",
    ),
}
GUARDED_TABLES = ("trail_events", "verifications")


@dataclass(frozen=True)
class GuardProblem:
    name: str
    problem: str  # "missing" | "disabled" | "altered"

    def __str__(self) -> str:
        return f"append-only trigger {self.name} is {self.problem}"


def _norm(sql: str | None) -> str:
    return re.sub(r"\s+", " ", sql or "").strip()


def check(conn: Connection) -> list[GuardProblem]:
    """Every expected trigger present, enabled and unchanged; else what is wrong."""
    problems = []
    if conn.dialect.name == "sqlite":
        found = dict(
            conn.execute(
                text(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                    "AND tbl_name IN ('trail_events', 'verifications')"
                )
            ).all()
        )
        for name, sql in SQLITE.items():
            if name not in found:
                problems.append(GuardProblem(name, "missing"))
            elif _norm(found[name]) != _norm(sql):
                problems.append(GuardProblem(name, "altered"))
        return problems
    found = {
        name: enabled
        for name, enabled in conn.execute(
            text(
                "SELECT t.tgname, t.tgenabled FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE c.oid IN (to_regclass('trail_events'), to_regclass('verifications')) AND NOT t.tgisinternal"
            )
        )
    }
    functions = dict(
        conn.execute(
            text(
                "SELECT p.proname, p.prosrc FROM pg_proc p "
                "WHERE p.proname = ANY(:names) AND p.pronamespace = to_regnamespace(current_schema())"
            ),
            {"names": list(POSTGRES_FUNCTIONS)},
        ).all()
    )
    for name, body in POSTGRES_FUNCTIONS.items():
        if name not in functions:
            problems.append(GuardProblem(f"function {name}()", "missing"))
        elif _norm(functions[name]) != _norm(body):
            problems.append(GuardProblem(f"function {name}()", "altered"))
    for name in POSTGRES_TRIGGERS:
        if name not in found:
            problems.append(GuardProblem(name, "missing"))
        elif found[name] not in ("O", "A"):  # D: disabled, R: fires only for replication
            problems.append(GuardProblem(name, "disabled"))
    return problems


def install(conn: Connection) -> None:
    """Create every guard (a fresh or rebuilt ``trail_events``)."""
    if conn.dialect.name == "sqlite":
        for sql in SQLITE.values():
            conn.exec_driver_sql(sql)
        return
    for name, body in POSTGRES_FUNCTIONS.items():
        sql = f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $${body}$$"
        conn.exec_driver_sql(sql.replace("%", "%%"))  # psycopg reads % as a placeholder
    for _table, sql in POSTGRES_TRIGGERS.values():
        conn.exec_driver_sql(sql)


def ensure(conn: Connection) -> list[GuardProblem]:
    """Reinstall every guard that is missing, disabled or altered; returns what was repaired."""
    problems = check(conn)
    if not problems:
        return []
    if conn.dialect.name == "sqlite":
        for name, sql in SQLITE.items():
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
            conn.exec_driver_sql(sql)
        return problems
    for name, (table, _sql) in POSTGRES_TRIGGERS.items():
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    install(conn)
    return problems
