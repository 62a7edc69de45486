"""The canonical form and the chain verification, without a database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from qmsflow.domain.trail import GENESIS, canonical_json, make_event, verify_chain


def verify_rows(rows: list[tuple]) -> object:
    return verify_chain(rows)[0]


T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)
event_args = st.tuples(
    st.text(min_size=1, max_size=20), st.text(max_size=30), st.text(max_size=40), json_values, json_values
)


def stored(event) -> tuple[int, str, str]:  # noqa: ANN001
    return (event.seq, event.canonical().decode("utf-8"), event.hash)


def chain(items: list[tuple]) -> list[tuple]:
    rows, prev = [], GENESIS
    for i, (actor, action, record, before, after) in enumerate(items, start=1):
        event = make_event(i, T0 + timedelta(seconds=i), actor, action, record, before, after, prev)
        rows.append(stored(event))
        prev = event.hash
    return rows


def test_canonical_event_is_the_canonical_json_of_the_whole_event() -> None:
    event = make_event(7, T0, "ana", "capa.created", "record:CAPA-2026-0007", None, {"ü": [1, 2], "a": 'x"y'}, GENESIS)
    whole = {
        "action": "capa.created",
        "actor": "ana",
        "after": {"ü": [1, 2], "a": 'x"y'},
        "before": None,
        "prev_hash": GENESIS,
        "record": "record:CAPA-2026-0007",
        "seq": 7,
        "ts": "2026-11-26T09:00:00.000000Z",
    }
    assert event.canonical() == canonical_json(whole).encode("utf-8")


@given(st.lists(event_args, min_size=1, max_size=12))
@settings(max_examples=150, deadline=None)
def test_any_series_of_appends_verifies(items: list[tuple]) -> None:
    rows = chain(items)
    report = verify_rows(rows)
    assert report.ok, report.broken
    assert report.count == len(items)
    assert report.head_hash == rows[-1][-1]


@given(st.lists(event_args, min_size=1, max_size=8), st.data())
@settings(max_examples=300, deadline=None)
def test_any_single_changed_byte_is_detected_at_its_event(items: list[tuple], data: st.DataObject) -> None:
    rows = chain(items)
    index = data.draw(st.integers(0, len(rows) - 1), label="event")
    column = data.draw(st.integers(1, 2), label="column")  # the canonical form or the hash
    original = rows[index][column]
    raw = bytearray(original.encode("utf-8"))
    if not raw:
        raw = bytearray(b" ")
        changed = raw.decode()
    else:
        pos = data.draw(st.integers(0, len(raw) - 1), label="byte")
        raw[pos] = (raw[pos] + data.draw(st.integers(1, 255), label="delta")) % 256
        changed = raw.decode("utf-8", errors="replace")
    if changed == original:
        changed = original + "x"
    tampered = list(rows)
    row = list(tampered[index])
    row[column] = changed
    tampered[index] = tuple(row)
    report = verify_rows(tampered)
    assert not report.ok
    assert report.broken.seq == index + 1
    assert report.count == index


def test_deleted_event_is_a_gap_at_its_seq() -> None:
    rows = chain([("ana", "a", "r", None, i) for i in range(5)])
    report = verify_rows(rows[:2] + rows[3:])
    assert (report.broken.seq, report.broken.problem) == (3, "gap")


def test_reordered_events_break_at_the_first_moved_seq() -> None:
    rows = chain([("ana", "a", "r", None, i) for i in range(5)])
    swapped = [list(r) for r in rows]
    swapped[1][0], swapped[2][0] = 3, 2  # exchange the sequence numbers of events 2 and 3
    swapped.sort(key=lambda r: r[0])
    report = verify_rows([tuple(r) for r in swapped])
    assert report.broken.seq == 2
    assert report.broken.problem == "link broken"  # the event stored at seq 2 links to event 2, not 1


def test_relinked_event_with_recomputed_hash_is_a_broken_link() -> None:
    rows = chain([("ana", "a", "r", None, i) for i in range(4)])
    forged = make_event(3, T0, "mallory", "a", "r", None, 99, "f" * 64)
    rows[2] = stored(forged)
    report = verify_rows(rows)
    assert (report.broken.seq, report.broken.problem) == (3, "link broken")


def test_empty_chain_verifies_with_genesis_head() -> None:
    report = verify_rows([])
    assert report.ok and report.count == 0 and report.head_hash == GENESIS


def test_canonical_json_is_stable_and_compact() -> None:
    assert canonical_json({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'
    assert json.loads(canonical_json({"x": "\u2028"})) == {"x": "\u2028"}


@given(event_args, json_values)
@settings(max_examples=200, deadline=None)
def test_fields_and_after_are_read_from_the_canonical_form_without_parsing_it(args: tuple, other: object) -> None:
    from qmsflow.domain.trail import after_is, fields_of

    actor, action, record, before, after = args
    event = make_event(1, T0, actor, action, record, before, after, GENESIS)
    canonical = event.canonical().decode("utf-8")
    assert fields_of(canonical) == (action, actor, record)
    assert after_is(canonical, canonical_json(after))
    if canonical_json(other) != canonical_json(after):
        assert not after_is(canonical, canonical_json(other))


def test_the_replay_keeps_the_last_state_per_ref_and_every_signature_but_no_note() -> None:
    items = [
        ("ana", "capa.created", "record:C-1", None, {"v": 1}),
        ("ana", "capa.advanced", "record:C-1", {"v": 1}, {"v": 2}),
        ("qmsflow", "capa.escalated", "record:C-1", None, {"to": "ben"}),  # a declared note
        ("ben", "approval.signed", "approval:A-1", None, {"signer": "ben"}),
        ("ana", "test.noted", "test:x", None, 1),  # a ref no record table holds
        ("dev", "capa.delete-refused", "record:C-1", None, {"refused": "retention"}),
    ]
    rows = chain(items)
    report, replay = verify_chain(rows)
    assert report.ok
    assert replay.states == {"record:C-1": rows[1][1], "test:x": rows[4][1]}  # the state check skips test:x
    assert replay.signatures == {4: rows[3][1]}


def test_an_event_stored_at_another_seq_than_it_names_is_reported() -> None:
    event = make_event(7, T0, "ana", "a", "r", None, 1, GENESIS)  # names seq 7, stored as seq 1
    report, _ = verify_chain([(1, event.canonical().decode("utf-8"), event.hash)])
    assert (report.broken.seq, report.broken.problem) == (1, "malformed")
    assert "another seq" in report.broken.detail


def test_a_stored_text_that_is_not_a_canonical_event_is_reported_not_raised() -> None:
    import hashlib

    text = '{"x":1,"prev_hash":"' + GENESIS + '","record":"unterminated'
    report, _ = verify_chain([(1, text, hashlib.sha256(text.encode()).hexdigest())])
    assert (report.broken.seq, report.broken.problem) == (1, "malformed")
