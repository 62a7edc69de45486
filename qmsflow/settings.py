"""Finding and loading ``qms.yaml``; every error names file, line and field.

Example of an error line::

    qms.yaml:42 processes[3].owner: 'quality-team' is not a person (people: ana, ben, chloe)
"""

from __future__ import annotations

import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode
from ruamel.yaml.scanner import RoundTripScanner

from .domain import limits, procedure_text
from .domain.aspects import uncovered
from .domain.organisation import DOC_ID, SLUG, QmsConfig, cross_check

CONFIG_NAME = "qms.yaml"
STATE_DIR = ".qms"

_PATTERN_HINTS = {
    SLUG: "lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
    DOC_ID: "uppercase letters, digits, '.', '_' or '-', like SOP-DOC-001",
}


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where} {self.field}: {self.message}" if self.field else f"{where} {self.message}"


class ConfigError(Exception):
    """``qms.yaml`` is missing, unreadable or invalid. ``issues`` holds every problem found."""

    def __init__(self, issues: list[ConfigIssue] | str):
        self.issues = [ConfigIssue("", 0, "", issues)] if isinstance(issues, str) else issues
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(i.message if not i.file else str(i) for i in self.issues)


@dataclass
class LoadedConfig:
    config: QmsConfig
    path: Path
    data: Any = field(repr=False, default=None)

    @property
    def root(self) -> Path:
        """The compliance repo: the folder that holds ``qms.yaml``."""
        return self.path.parent

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    def line_of(self, loc: tuple) -> int:
        return _line_of(self.data, loc)


def find_config(explicit: str | os.PathLike | None = None, cwd: Path | None = None) -> Path:
    """``--config``, else ``QMS_CONFIG``, else ``qms.yaml`` in the current folder or a parent."""
    if explicit:
        path = Path(explicit).expanduser()
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path.resolve()
    env = os.environ.get("QMS_CONFIG")
    if env:
        path = Path(env).expanduser()
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            raise ConfigError(f"QMS_CONFIG points to {path}, which does not exist")
        return path.resolve()
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no {CONFIG_NAME} found in {here} or its parents: run 'qms init DIR' to scaffold a compliance repo, "
        "or pass --config / set QMS_CONFIG"
    )


def load_config(explicit: str | os.PathLike | None = None, cwd: Path | None = None) -> LoadedConfig:
    path = find_config(explicit, cwd)
    return parse_config(read_config_text(path), path)


def read_config_text(path: Path, max_bytes: int = limits.CONFIG_BYTES) -> str:
    """The text of ``qms.yaml``: at most ``max_bytes`` read, UTF-8 (a BOM is allowed), else ``ConfigError``."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise ConfigError(
            [ConfigIssue(path.name, 1, "", f"is larger than {max_bytes // 1024:,} KiB, the limit for a qms.yaml")]
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            [
                ConfigIssue(
                    path.name,
                    line,
                    "",
                    f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte offset {exc.start}): "
                    "save the file as UTF-8",
                )
            ]
        ) from None


class _LimitExceeded(MarkedYAMLError):
    """A YAML document beyond the limits of a qms.yaml (nesting, alias expansion)."""


class _BoundedScanner(RoundTripScanner):
    """Refuses flow collections (``[`` / ``{``) nested deeper than the limit while scanning.

    Without it the scanner reads ahead through a whole run of ``[`` before the composer sees the
    first one (100,000 of them took over 4 s here); here the scan stops at the 33rd.
    """

    def fetch_flow_collection_start(self, TokenClass: Any, to_push: str) -> None:  # noqa: N803 - ruamel's name
        if len(self.flow_context) >= limits.CONFIG_DEPTH:
            raise _LimitExceeded(None, None, f"nested deeper than {limits.CONFIG_DEPTH} levels", self.reader.get_mark())
        super().fetch_flow_collection_start(TokenClass, to_push)


class _BoundedComposer(Composer):
    """Bounds nesting and alias expansion while the node graph is composed.

    Composing is cheap even for a YAML bomb (an alias is a shared reference); what explodes is
    everything after it that walks the data as a tree. So every node counts once, and every alias
    counts as many nodes as its anchored subtree expands to; past ``CONFIG_NODES`` the load stops.
    An alias to a node that contains it (a cycle) is refused too.
    """

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self._nodes = 0
        self._level = 0
        self._weights: dict[Any, int] = {}
        self._open: set[Any] = set()

    def _count(self, nodes: int, event: Any) -> None:
        self._nodes += nodes
        if self._nodes > limits.CONFIG_NODES:
            raise _LimitExceeded(
                None,
                None,
                f"expands to more than {limits.CONFIG_NODES:,} values through aliases (*name); "
                "a qms.yaml needs far fewer: is this a YAML bomb?",
                event.start_mark,
            )

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            if event.anchor in self._open:
                raise _LimitExceeded(
                    None, None, f"alias *{event.anchor} refers to a value that contains it", event.start_mark
                )
            self._count(self._weights.get(event.anchor, 1), event)
            return super().compose_node(parent, index)
        self._level += 1
        if self._level > limits.CONFIG_DEPTH:
            raise _LimitExceeded(None, None, f"nested deeper than {limits.CONFIG_DEPTH} levels", event.start_mark)
        anchor, before = event.anchor, self._nodes
        self._count(1, event)
        if anchor is not None:
            self._open.add(anchor)
        node = super().compose_node(parent, index)
        if anchor is not None:
            self._open.discard(anchor)
            self._weights[anchor] = self._nodes - before
        self._level -= 1
        return node


class _BoundedConstructor(RoundTripConstructor):
    """Refuses integers longer than a qms.yaml needs, before Python's own limit (4,300 digits) raises."""

    def construct_yaml_int(self, node: Any) -> Any:
        digits = sum(ch.isdigit() for ch in str(node.value))
        if digits > limits.CONFIG_INT_DIGITS:
            raise _LimitExceeded(
                None,
                None,
                f"is a number of {digits:,} digits: at most {limits.CONFIG_INT_DIGITS} are allowed",
                node.start_mark,
            )
        return super().construct_yaml_int(node)


_BoundedConstructor.add_constructor("tag:yaml.org,2002:int", _BoundedConstructor.construct_yaml_int)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.Scanner = _BoundedScanner
    yaml.Composer = _BoundedComposer
    yaml.Constructor = _BoundedConstructor
    return yaml


def _field_at(text: str, line: int, column: int) -> str:
    """The dotted path of the scalar at (line, column) of a document that composes, or '' (for messages)."""
    try:
        node = _yaml().compose(text)
    except YAMLError:
        return ""

    def walk(node: Any, path: list[str]) -> str | None:
        if isinstance(node, ScalarNode):
            mark = node.start_mark
            return ".".join(path) if (mark.line, mark.column) == (line, column) else None
        if isinstance(node, MappingNode):
            for key, value in node.value:
                found = walk(value, [*path, str(key.value)])
                if found is not None:
                    return found
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                found = walk(item, [*path, str(index)])
                if found is not None:
                    return found
        return None

    return (walk(node, []) or "") if node is not None else ""


def parse_config(text: str, path: Path) -> LoadedConfig:
    name = path.name
    if len(text) > limits.CONFIG_BYTES:
        raise ConfigError(
            [ConfigIssue(name, 1, "", f"is larger than {limits.CONFIG_BYTES // 1024:,} KiB, the limit for a qms.yaml")]
        )
    try:
        data = _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = exc.problem or exc.context
        limited = isinstance(exc, _LimitExceeded)
        where = (
            _field_at(text, mark.line, mark.column) if limited and mark and problem.startswith("is a number") else ""
        )
        raise ConfigError(
            [ConfigIssue(name, line, where, problem if limited else f"not valid YAML: {problem}")]
        ) from None
    except YAMLError as exc:  # the reader refuses control characters; its error has a position, no mark
        raise ConfigError([_reader_issue(name, text, exc)]) from None
    if not isinstance(data, CommentedMap):
        raise ConfigError(
            [ConfigIssue(name, 1, "", "must be a mapping with organisation, people, processes, documents ...")]
        )
    try:
        config = QmsConfig.model_validate(_plain(data))
    except ValidationError as exc:
        issues = [_issue_from_pydantic(name, data, err) for err in exc.errors()]
        raise ConfigError(sorted(set(issues), key=lambda i: (i.line, i.field))) from None
    problems = cross_check(config)
    if problems:
        raise ConfigError([ConfigIssue(name, _line_of(data, loc), _loc_str(loc), msg) for loc, msg in problems])
    return LoadedConfig(config, path.resolve(), data)


def check_repo(loaded: LoadedConfig) -> tuple[list[ConfigIssue], list[str]]:
    """Checks of the compliance repo beyond the config: registered documents exist; aspect coverage."""
    errors: list[ConfigIssue] = []
    for index, doc in enumerate(loaded.config.documents):
        target = loaded.root / doc.path
        if not target.is_file():
            loc = ("documents", index, "path")
            errors.append(
                ConfigIssue(
                    loaded.path.name,
                    loaded.line_of(loc),
                    _loc_str(loc),
                    f"{doc.path!r} does not exist in {loaded.root}",
                )
            )
            continue
        text = target.read_text(encoding="utf-8", errors="replace")
        for line, what in procedure_text.bad_placeholders(text, procedure_text.values(loaded.config, doc.id)):
            errors.append(ConfigIssue(doc.path, line, "", what))
    warnings = []
    missing = uncovered(loaded.config.covered_aspects())
    if missing:
        warnings.append(
            "Art. 17(1) aspects covered by no process: "
            + ", ".join(f"({a})" for a in missing)
            + " — add them to the 'aspects' of a process"
        )
    return errors, warnings


# ---------------------------------------------------------------- helpers


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _line_of(data: Any, loc: tuple) -> int:
    node, line = data, 1
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            break
    return line


def _loc_str(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class found at ``loc`` inside ``model`` (for 'allowed keys' hints)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        current = _unwrap(current.model_fields[part].annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin in (list, typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = args[0] if args else annotation
        elif origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation


def _issue_from_pydantic(file: str, data: Any, err: dict) -> ConfigIssue:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "extra_forbidden":
        parent = _model_at(QmsConfig, loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent else "see the documentation"
        message = f"unknown key {loc[-1]!r} (allowed: {allowed})"
    elif kind == "missing":
        message = "required, but missing"
    elif kind == "literal_error":
        message = f"{_short(value)} is not allowed (allowed: {ctx.get('expected', '')})"
    elif kind == "string_pattern_mismatch":
        hint = _PATTERN_HINTS.get(ctx.get("pattern", ""), f"must match {ctx.get('pattern')}")
        message = f"{_short(value)} is not valid ({hint})"
    elif kind == "value_error":
        message = str(ctx.get("error", err["msg"]))
    elif kind in ("model_type", "dict_type"):
        message = f"must be a mapping of keys, got {type(value).__name__} {_short(value)}"
    elif kind == "list_type":
        message = f"must be a list, got {type(value).__name__} {_short(value)}"
    elif kind in ("string_too_long", "too_long"):
        size = len(value) if isinstance(value, (str, list, dict)) else "too many"
        message = f"{size:,} {'characters' if isinstance(value, str) else 'items'} long, at most {ctx.get('max_length'):,} allowed"
    else:
        message = f"{err['msg']} (got {_short(value)})" if not isinstance(value, (dict, list)) else err["msg"]
    return ConfigIssue(file, _line_of(data, loc), _loc_str(loc), message)


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` of a value from the file, cut to fit an error line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(str(value)):,} characters)"


def _reader_issue(file: str, text: str, exc: Exception) -> ConfigIssue:
    position, character = getattr(exc, "position", None), getattr(exc, "character", None)
    if not isinstance(position, int) or not isinstance(character, int):
        return ConfigIssue(file, 1, "", f"not valid YAML: {str(exc).splitlines()[0]}")
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return ConfigIssue(
        file, line, "", f"not valid YAML: the control character U+{character:04X} (column {column}) is not allowed"
    )
