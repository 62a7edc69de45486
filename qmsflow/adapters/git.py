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
