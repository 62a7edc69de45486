"""Prefect tasks shared by the QMS flows: thin wrappers over qmsflow's services.

Every task is idempotent (keyed by a stable id in the records store), because a flow may run
again from the top when a suspended run resumes (docs/adr/0002-flow-idempotency.md).
"""
