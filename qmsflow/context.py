"""Opening a compliance repo: its config and its records store, for the CLI, flows and web app."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .settings import LoadedConfig, load_config
from .store.db import Database, default_url, resolve_url


@dataclass
class QmsContext:
    loaded: LoadedConfig
    db: Database
    repaired_guards: list[str] = field(default_factory=list)  # append-only triggers reinstalled on opening

    @property
    def config(self):  # noqa: ANN201
        return self.loaded.config

    @property
    def root(self) -> Path:
        return self.loaded.root

    @property
    def anchors_file(self) -> Path:
        return self.root / self.config.retention.anchors_file

    def close(self) -> None:
        self.db.dispose()

    def __enter__(self) -> QmsContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_context(config: str | Path | None = None, *, migrate: bool = False) -> QmsContext:
    """Load ``qms.yaml`` and open its records store; check (or bring) the schema up to date."""
    from .bootstrap import procedures
    from .services.sealing import Sealer

    procedures()
    loaded = load_config(config)
    url = resolve_url(loaded.state_dir)
    db = Database(url)
    # the embedded stack's own SQLite store makes its signing key when it first signs; a store elsewhere
    # (QMS_DATABASE_URL) is signed for only by processes given its key (QMS_SIGNING_KEY_FILE)
    db.sealer = Sealer(loaded.root, generate=url == default_url(loaded.state_dir))
    repaired: list[str] = []
    if migrate:
        db.upgrade()
        repaired = db.repair_guards()
    else:
        db.require_current()
    return QmsContext(loaded, db, repaired)
