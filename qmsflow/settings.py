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
from ruamel.yaml.error import MarkedYAMLError

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
    return parse_config(path.read_text(encoding="utf-8"), path)


def parse_config(text: str, path: Path) -> LoadedConfig:
    name = path.name
    yaml = YAML(typ="rt")
    try:
        data = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise ConfigError([ConfigIssue(name, line, "", f"not valid YAML: {exc.problem or exc.context}")]) from None
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
        message = f"{value!r} is not allowed (allowed: {ctx.get('expected', '')})"
    elif kind == "string_pattern_mismatch":
        hint = _PATTERN_HINTS.get(ctx.get("pattern", ""), f"must match {ctx.get('pattern')}")
        message = f"{value!r} is not valid ({hint})"
    elif kind == "value_error":
        message = str(ctx.get("error", err["msg"]))
    elif kind in ("model_type", "dict_type"):
        message = f"must be a mapping of keys, got {type(value).__name__} {value!r}"
    elif kind == "list_type":
        message = f"must be a list, got {type(value).__name__} {value!r}"
    else:
        message = f"{err['msg']} (got {value!r})" if not isinstance(value, (dict, list)) else err["msg"]
    return ConfigIssue(file, _line_of(data, loc), _loc_str(loc), message)
