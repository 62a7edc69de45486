"""Where ``qms login`` keeps your personal token: a user-only file, one entry per records store.

``$XDG_CONFIG_HOME/qmsflow/credentials.json`` (default ``~/.config/qmsflow/credentials.json``), the
folder 0700 and the file 0600, like other CLIs keep theirs. Entries are keyed by the records store
(its URL without password; for SQLite the database file), so several compliance repos work side by
side. A file that others can read is refused, not used.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FILE_NAME = "credentials.json"


class CredentialsError(Exception):
    """The credentials file cannot be used; the message says how to fix it."""


def folder() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "qmsflow"


def path() -> Path:
    return folder() / FILE_NAME


def _check_private(target: Path) -> None:
    info = target.stat()
    if info.st_uid != os.getuid():
        raise CredentialsError(f"{target} belongs to another user: remove it, then run 'qms login'")
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise CredentialsError(
            f"{target} can be read by other users (mode {stat.S_IMODE(info.st_mode):o}): "
            f"run 'chmod 600 {target}', or remove it and run 'qms login'"
        )


def _read() -> dict[str, Any]:
    target = path()
    if not target.exists():
        return {"version": 1, "stores": {}}
    _check_private(target)
    try:
        data = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CredentialsError(f"{target} is not readable ({exc}): remove it and run 'qms login'") from None
    if not isinstance(data, dict) or not isinstance(data.get("stores"), dict):
        raise CredentialsError(f"{target} is not a qmsflow credentials file: remove it and run 'qms login'")
    return data


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    home = folder()
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    with open(home / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write(data: dict[str, Any]) -> None:
    target = path()
    temp = target.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.chmod(temp, 0o600)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def load(store: str) -> dict[str, Any] | None:
    """The entry of ``store`` (``token``, ``username``, ``person``, ``token_id``, ``expires_at``, ...)."""
    entry = _read()["stores"].get(store)
    return entry if isinstance(entry, dict) and isinstance(entry.get("token"), str) else None


def save(store: str, entry: dict[str, Any]) -> Path:
    with _locked():
        data = _read()
        data["stores"][store] = entry
        _write(data)
    return path()


def remove(store: str) -> bool:
    with _locked():
        data = _read()
        found = data["stores"].pop(store, None) is not None
        if found:
            _write(data)
    return found
