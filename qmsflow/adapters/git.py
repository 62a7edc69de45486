"""Git facts about files of the compliance repo: the commit that holds a document, the history of the anchors."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..domain.authorship import Commit


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


def commits_since(
    root: Path, relpath: str, commit: str | None, since: str | None, allowed_signers: list[str] | None = None
) -> list[Commit] | None:
    """The commits that changed ``relpath`` after ``commit`` (or, without one, after the ISO time ``since``;
    without either, in all history), newest first, each with its declared author and its signature as
    git verifies it. A ``commit`` that git no longer knows (rewritten history) counts as absent, so more
    commits are examined rather than fewer.

    SSH signatures are verified against ``allowed_signers`` (lines of git's allowed-signers format, the
    principal a person id), GPG signatures with the keyring of this user; git itself verifies, qmsflow
    only reads its verdict (``%G?``). ``None`` outside a git repo.
    """
    if _git(root, "rev-parse", "--is-inside-work-tree") != "true":
        return None
    args = ["log", "--format=%H%x00%an%x00%ae%x00%G?%x00%GS%x00%GF%x00%GP"]
    if commit and _git(root, "cat-file", "-e", f"{commit}^{{commit}}") is not None:
        args.append(f"{commit}..HEAD")
    elif since:
        args.append(f"--since={since}")
    with tempfile.TemporaryDirectory(prefix="qms-signers-") as folder:
        signers = Path(folder) / "allowed_signers"
        signers.write_text("".join(line + "\n" for line in allowed_signers or []), encoding="utf-8")
        listed = _git(root, "-c", f"gpg.ssh.allowedSignersFile={signers}", *args, "--", relpath)
    commits = []
    for line in (listed or "").splitlines():
        parts = (line.split("\x00") + [""] * 7)[:7]
        sha, name, email, status, signer, fingerprint, primary = parts
        if sha:
            commits.append(Commit(sha, name, email, status or "N", signer, fingerprint, primary))
    return commits


def show(root: Path, commit: str, relpath: str) -> bytes | None:
    """The bytes of ``relpath`` as committed in ``commit``, or None."""
    try:
        done = subprocess.run(["git", "-C", str(root), "show", f"{commit}:{relpath}"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def is_repo(path: Path) -> bool:
    """Whether ``path`` (a folder) lies in a git work tree."""
    return _git(path, "rev-parse", "--is-inside-work-tree") == "true"


@dataclass(frozen=True)
class FileChange:
    commit: str
    date: str  # committer date, ISO 8601
    hunks: list[tuple[int, int, list[str]]]  # (old start, old length, added lines), as git diff -U0 gives them


def file_history(folder: Path, name: str) -> list[FileChange] | None:
    """Every commit of HEAD's history that changed ``folder/name``, oldest first, with its diff.

    ``None`` when ``folder`` is not in a git repo (or git fails).
    """
    try:
        done = subprocess.run(
            [
                "git",
                "-C",
                str(folder),
                "log",
                "--reverse",
                "--no-color",
                "--no-ext-diff",
                "--no-renames",
                "-U0",
                "-p",
                "--format=%x00%H %cI",
                "--",
                name,
            ],
            capture_output=True,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    changes = []
    for chunk in done.stdout.decode("utf-8", errors="replace").split("\x00")[1:]:
        header, _, patch = chunk.partition("\n")
        commit, _, date = header.partition(" ")
        hunks: list[tuple[int, int, list[str]]] = []
        for line in patch.splitlines():
            if line.startswith("@@"):
                old = line.split()[1]  # -start[,length]
                start, _, length = old[1:].partition(",")
                hunks.append((int(start), int(length) if length else 1, []))
            elif hunks and line.startswith("+") and not line.startswith("+++"):
                hunks[-1][2].append(line[1:])
        changes.append(FileChange(commit, date, hunks))
    return changes


def commit_file(folder: Path, name: str, message: str) -> str | None:
    """Commit ``folder/name`` alone (other staged changes stay staged); the commit that holds it, or None.

    Uses the repo's git identity, else ``qmsflow <qmsflow@localhost>``.
    """
    if not _git(folder, "status", "--porcelain", "--", name):
        return _git(folder, "log", "-1", "--format=%H", "--", name) or None  # already committed
    if _git(folder, "add", "--", name) is None:
        return None
    identity = (
        []
        if _git(folder, "config", "user.email")
        else ["-c", "user.name=qmsflow", "-c", "user.email=qmsflow@localhost"]
    )
    if _git(folder, *identity, "commit", "-q", "--only", "-m", message, "--", name) is None:
        return None
    return _git(folder, "rev-parse", "HEAD")
