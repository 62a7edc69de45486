"""Reading git facts about files of the compliance repo (the commit that holds a document)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit_of(root: Path, relpath: str) -> str | None:
    """The last commit that changed ``relpath``, if the file is committed and unchanged since.

    ``None`` outside a git repo, for untracked files and for files with uncommitted changes:
    a version snapshot must name a commit only when that commit holds exactly the content hashed.
    """
    if _git(root, "rev-parse", "--is-inside-work-tree") != "true":
        return None
    if _git(root, "ls-files", "--error-unmatch", "--", relpath) is None:
        return None
    if _git(root, "status", "--porcelain", "--", relpath):
        return None
    return _git(root, "log", "-1", "--format=%H", "--", relpath) or None


def authors_since(root: Path, relpath: str, commit: str | None, since: str | None) -> list[tuple[str, str]] | None:
    """(name, e-mail) of the authors of the commits that changed ``relpath`` after ``commit`` (or, without
    one, after the ISO time ``since``; without either, in all history), newest first, each once.

    ``None`` outside a git repo. A ``commit`` that git no longer knows (rewritten history) counts as
    absent, so more authors are named rather than fewer.
    """
    if _git(root, "rev-parse", "--is-inside-work-tree") != "true":
        return None
    args = ["log", "--format=%an%x00%ae"]
    if commit and _git(root, "cat-file", "-e", f"{commit}^{{commit}}") is not None:
        args.append(f"{commit}..HEAD")
    elif since:
        args.append(f"--since={since}")
    listed = _git(root, *args, "--", relpath)
    if listed is None:
        return []
    seen: dict[str, tuple[str, str]] = {}
    for line in listed.splitlines():
        name, _, email = line.partition("\x00")
        if email and email.lower() not in seen:
            seen[email.lower()] = (name, email)
    return list(seen.values())


def show(root: Path, commit: str, relpath: str) -> bytes | None:
    """The bytes of ``relpath`` as committed in ``commit``, or None."""
    try:
        done = subprocess.run(["git", "-C", str(root), "show", f"{commit}:{relpath}"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None
