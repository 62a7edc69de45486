"""QMS procedures as Prefect flows: one module per procedure. Flows orchestrate; services decide."""
