"""Who wrote a change under review, and how much of that git can prove (ADR 0019).

A commit's author e-mail is whatever its committer typed (``git -c user.email=… commit``): on its own it
proves nothing. The rules:

- the person who submits a change is always one of its authors (authenticated by their credential);
- a commit's author is *verified* when git verifies the commit's signature with a key that qms.yaml
  registers for that same person (``people[].signing_keys``: an SSH public key, or ``gpg:<fingerprint>``);
- every other author stays an author (they may not sign: naming more authors is the safe side) and is
  shown to the approvers as *unverified*, with the commit and the reason;
- with ``security.require_signed_commits`` a commit that is not verified refuses the submission.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .capabilities import declare

# git's %G? letters (git-log(1), "Placeholders that expand to information extracted from the commit")
GOOD = "G"
GOOD_UNKNOWN_VALIDITY = "U"  # a good signature whose key the GPG web of trust does not vouch for
STATUS_WORDS = {
    "G": "a good signature",
    "B": "a bad signature",
    "U": "a good signature of unknown validity",
    "X": "a good signature that has expired",
    "Y": "a good signature by an expired key",
    "R": "a good signature by a revoked key",
    "E": "a signature git cannot check (missing key or allowed-signers entry)",
    "N": "no signature",
}


@dataclass(frozen=True)
class Commit:
    """What git reports of one commit: authorship as declared, and its signature as git verified it."""

    sha: str
    author_name: str
    author_email: str
    status: str = "N"  # %G?
    signer: str = (
        ""  # %GS: the SSH principal (a person id, from the allowed-signers file qmsflow writes) or the GPG user id
    )
    fingerprint: str = ""  # %GF (GPG) or the SSH key fingerprint
    primary_fingerprint: str = ""  # %GP (GPG)


@dataclass(frozen=True)
class Signer:
    """A person as qms.yaml states them: id and registered GPG fingerprints (SSH keys go to git's allowed signers)."""

    id: str
    gpg_fingerprints: frozenset[str] = frozenset()


@dataclass
class Authorship:
    authors: list[str] = field(default_factory=list)  # person ids, the submitter first
    unverified: list[str] = field(default_factory=list)  # "Name <e-mail> (commit abc1234: reason)"
    unmapped: list[str] = field(default_factory=list)  # "Name <e-mail>" with no person in qms.yaml
    unsigned: list[str] = field(default_factory=list)  # why each commit is not verified (require_signed_commits)


def is_verified(commit: Commit, person: Signer) -> tuple[bool, str]:
    """Whether git verified ``commit`` as signed by a key qms.yaml registers for ``person`` (and if not, why)."""
    if commit.status == "N":
        return False, "not signed"
    if commit.status not in (GOOD, GOOD_UNKNOWN_VALIDITY):
        return False, f"git reports {STATUS_WORDS.get(commit.status, commit.status)}"
    fingerprints = {commit.fingerprint.upper(), commit.primary_fingerprint.upper()} - {""}
    if fingerprints & person.gpg_fingerprints:
        return True, ""
    if commit.status == GOOD and commit.signer == person.id:  # SSH: the principal of our allowed-signers line
        return True, ""
    return False, f"signed by a key qms.yaml does not register for {person.id}"


AUTHORS_EXCLUDED = declare(
    "approval.authors_excluded",
    "qmsflow takes as the authors of a document change the person who submits it and the git authors of "
    "the commits that changed the document since its last approved version, matched to people by the "
    "e-mail addresses qms.yaml gives them (`email`, `git_emails`); none of them may sign its approval. A git "
    "author that matches no person, or whose commit is not signed with a key qms.yaml registers for that "
    "person, is named in the approval request, so that the approvers see it.",
    proved_by=(
        "tests/integration/test_signed_content.py::test_git_authors_of_a_change_may_not_approve_it_and_unknown_ones_are_named",
        "tests/integration/test_signatures_bound.py::test_authorship_typed_by_the_committer_is_named_unverified",
        "tests/unit/test_approvals_domain.py::test_every_author_of_a_change_is_refused_not_only_the_submitter",
    ),
    module=__name__,
)


def authorship(
    commits: Iterable[Commit],
    submitter: str,
    person_by_email: Callable[[str], Signer | None],
    ignore: Callable[[Commit], bool] = lambda _: False,
) -> Authorship:
    """The authors of a change: the submitter, then each commit's author, verified or named as unverified."""
    result = Authorship(authors=[submitter] if submitter else [])
    for commit in commits:
        if ignore(commit):
            continue
        who = f"{commit.author_name} <{commit.author_email}>"
        person = person_by_email(commit.author_email)
        if person is None:
            if who not in result.unmapped:
                result.unmapped.append(who)
            result.unsigned.append(f"commit {commit.sha[:10]} by {who}: no person of qms.yaml has this e-mail")
            continue
        if person.id not in result.authors:
            result.authors.append(person.id)
        verified, reason = is_verified(commit, person)
        if verified:
            continue
        result.unsigned.append(f"commit {commit.sha[:10]} by {who}: {reason}")
        if person.id != submitter:
            result.unverified.append(f"{who} (commit {commit.sha[:10]}: {reason})")
    return result
