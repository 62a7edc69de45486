"""What qmsflow does, as the procedures may state it: a registry the code declares next to each feature.

A scaffolded procedure says that qmsflow does something only through the template helper
``{{ qmsflow_does("capa.verifier_independent") }}``, which prints the statement declared here by the
module that implements it. Rendering fails on a name nobody declared, so a procedure cannot claim a
feature that does not exist; each declaration names the tests that prove it, and a test checks those
tests exist. What qmsflow does not do is written in the procedure as a manual step (``manual(...)``).

A statement is one or more whole sentences, written so that it reads in any procedure that cites it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$")
_TEST = re.compile(r"^tests/[\w/]+\.py::\w+$")


class UnknownCapability(LookupError):
    """A procedure names a capability that no part of qmsflow declares."""


@dataclass(frozen=True)
class Capability:
    name: str
    statement: str
    proved_by: tuple[str, ...]
    module: str


_REGISTRY: dict[str, Capability] = {}


def declare(name: str, statement: str, *, proved_by: tuple[str, ...] | list[str], module: str = "") -> Capability:
    """Declare what the calling feature does; the same name twice must say the same thing."""
    if not _NAME.match(name):
        raise ValueError(f"capability name {name!r}: dotted lower-case words, e.g. 'capa.verifier_independent'")
    statement = " ".join(statement.split())
    if not statement or statement[-1] not in ".;:":
        raise ValueError(f"capability {name}: the statement must be whole sentences ending with a full stop")
    tests = tuple(proved_by)
    if not tests or any(not _TEST.match(t) for t in tests):
        raise ValueError(f"capability {name}: proved_by must name tests as 'tests/…/test_x.py::test_name'")
    capability = Capability(name, statement, tests, module)
    known = _REGISTRY.get(name)
    if known is not None and (known.statement, known.proved_by) != (statement, tests):
        raise ValueError(f"capability {name} is declared twice, differently ({known.module} and {module})")
    _REGISTRY[name] = capability
    return capability


def get(name: str) -> Capability:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = sorted(n for n in _REGISTRY if n.split(".")[0] == name.split(".")[0])
        hint = f" (declared in {name.split('.')[0]}: {', '.join(close)})" if close else ""
        raise UnknownCapability(f"no part of qmsflow declares the capability {name!r}{hint}") from None


def declared() -> dict[str, Capability]:
    return dict(_REGISTRY)
