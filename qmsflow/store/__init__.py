"""The records store: the source of truth of every QMS record, with its audit trail."""

from .db import Database, StoreError
from .uow import UnitOfWork

__all__ = ["Database", "StoreError", "UnitOfWork"]
