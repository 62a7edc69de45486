"""Limits of every input that can land in the records store, in one place.

The table columns (``store/tables.py``) are declared with these lengths, and every edge checks the
same numbers: the ``qms.yaml`` models, the CLI options, the web forms, the API bodies and the
services that write records. SQLite does not enforce ``VARCHAR(n)`` and PostgreSQL refuses an
over-long value with a database error (and any text with a NUL character), so without these checks
the same input would be stored silently on one and fail with a trace on the other. With them both
refuse it first, with a message that names the field and the limit.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints

from .errors import DomainError

# ---------------------------------------------------------------- column lengths (VARCHAR n)
ID = 64  # person ids, usernames, process keys, document ids, roles
RECORD_ID = 40  # CAPA-2026-0001, APR-2026-0001, record kinds and statuses
VERSION = 20  # document versions, decisions, methods, user roles
NAME = 200  # a person's printed name, process titles, meanings, trail actors and refs
EMAIL = 320
SLACK_ID = 32
DOC_TITLE = 300
RECORD_TITLE = 500  # records and approval requests
PATH = 500  # document paths in the compliance repo
SCHEDULE = 100  # cron expressions
KEY = 200  # idempotency keys of records and approval requests
TOKEN_NAME = 100
# ---------------------------------------------------------------- free text (TEXT columns and JSON)
CONFIG_INT_DIGITS = 30  # a number in qms.yaml (days, counts, sizes): far more than any needs
SIGNING_KEY = 2_000  # an SSH public key line (RSA 4096 is ~750 characters) or gpg:<fingerprint>
COMMENT = 5_000  # signature comments, review comments
TEXT = 20_000  # descriptions and every string inside stage data
JSON_DEPTH = 8  # nesting of stage data given as JSON (a CAPA action plan needs 3)
JSON_CHARS = 200_000  # the whole of one JSON value, serialised
# ---------------------------------------------------------------- numbers
INT_MAX = 2**31 - 1  # INTEGER columns on PostgreSQL (SQLite's are wider)
LIST_MAX = 10_000  # --limit of list commands
DAYS_MAX = 3_660  # day windows (ten years)
# ---------------------------------------------------------------- whole inputs
CONFIG_BYTES = 1024 * 1024  # qms.yaml
CONFIG_DEPTH = 32  # nesting of qms.yaml (the schema needs 5)
CONFIG_NODES = 250_000  # nodes of qms.yaml after alias expansion (the 50-system large demo has ~7,300)
REQUEST_BYTES = 1024 * 1024  # default web request body limit (qms.yaml web.max_request_kib)

_ALLOWED_CONTROLS = frozenset("\t\n\r")


class InvalidInput(DomainError):
    """An input is too long, not text, or holds characters no record may hold; the message names it."""


def text_problem(value: str, max_length: int, *, multiline: bool = False) -> str | None:
    """What is wrong with ``value`` as a text field of at most ``max_length`` characters, or None."""
    if len(value) > max_length:
        return f"{len(value):,} characters long, at most {max_length:,} allowed"
    for index, char in enumerate(value):
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (Python's surrogateescape of argv and env)
            return f"is not valid UTF-8 text (byte 0x{code - 0xDC00:02x} at character {index + 1})"
        if 0xD800 <= code <= 0xDFFF:
            return f"is not valid Unicode text (lone surrogate at character {index + 1})"
        if (code < 0x20 or code == 0x7F) and not (multiline and char in _ALLOWED_CONTROLS):
            return f"contains the control character U+{code:04X} at character {index + 1}, which is not allowed"
    return None


def check_text(field: str, value: str | None, max_length: int, *, multiline: bool = False) -> str | None:
    """``value`` unchanged if it is acceptable text (None passes), else ``InvalidInput`` naming ``field``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: must be text, got {type(value).__name__}")
    problem = text_problem(value, max_length, multiline=multiline)
    if problem:
        raise InvalidInput(f"{field}: {problem}")
    return value


def check_json(field: str, value: Any, *, depth: int = JSON_DEPTH, max_text: int = TEXT) -> Any:
    """``value`` unchanged if it is JSON data within the limits (nesting, text of every string, total size)."""
    stack: list[tuple[Any, int, str]] = [(value, 1, field)]
    while stack:
        item, level, where = stack.pop()
        if level > depth:
            raise InvalidInput(f"{where}: nested deeper than {depth} levels")
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise InvalidInput(f"{where}: keys must be text")
                check_text(f"{where} key", key, NAME)
                stack.append((child, level + 1, f"{where}.{key}"))
        elif isinstance(item, list):
            stack.extend((child, level + 1, f"{where}[{i}]") for i, child in enumerate(item))
        elif isinstance(item, str):
            check_text(where, item, max_text, multiline=True)
        elif isinstance(item, bool) or item is None:
            pass
        elif isinstance(item, int):
            if abs(item) > 2**53:
                raise InvalidInput(f"{where}: the number {item} is too large")
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                raise InvalidInput(f"{where}: {item} is not a number JSON can hold")
        else:
            raise InvalidInput(f"{where}: {type(item).__name__} is not JSON data")
    size = len(json.dumps(value, ensure_ascii=False))
    if size > JSON_CHARS:
        raise InvalidInput(f"{field}: {size:,} characters of JSON, at most {JSON_CHARS:,} allowed")
    return value


def parse_json(raw: str | bytes, field: str = "body", *, depth: int = JSON_DEPTH) -> Any:
    """``json.loads`` that turns every failure into ``InvalidInput``: syntax, non-UTF-8, nesting."""
    try:
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8")
        value = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{field}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    except RecursionError:
        raise InvalidInput(f"{field}: nested deeper than {depth} levels") from None
    except ValueError as exc:
        raise InvalidInput(f"{field}: not valid JSON ({exc})") from None
    _check_depth(field, value, depth)
    return value


def _check_depth(field: str, value: Any, depth: int) -> None:
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > depth:
            raise InvalidInput(f"{field}: nested deeper than {depth} levels")
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)


def validator(max_length: int, multiline: bool = False):  # noqa: ANN202
    """A pydantic ``AfterValidator`` function for text of at most ``max_length`` characters."""

    def check(value: str) -> str:
        problem = text_problem(value, max_length, multiline=multiline)
        if problem:
            raise ValueError(problem)
        return value

    return check


def Text(max_length: int, *, multiline: bool = False, min_length: int = 0) -> Any:  # noqa: N802 - a type factory
    """A pydantic string type with the column's limit: ``title: Text(limits.RECORD_TITLE)``."""
    return Annotated[
        str,
        StringConstraints(min_length=min_length, max_length=max_length),
        AfterValidator(validator(max_length, multiline)),
    ]
