"""Application services: use cases over the domain and the records store, shared by CLI, flows and web.

One signature for a use case: the unit of work first, then the configuration, then identifiers and
fields (``advance(uow, config, capa_id, target, fields)``); a use case commits its unit of work itself
when it succeeds (a refusal raises, and the unit of work rolls back what it did). A caller's own
``uow.commit()`` after it is harmless. Building blocks that use cases compose
(``approvals.open_request``, ``approvals.notify``, ``records.update_record``,
``documents.transition_version``, ``mirror.stage_changed``) never commit, so that a use case is one
transaction.
"""
