"""Production topology: register every deployment of ``DEPLOYMENTS`` against a Prefect API and a work pool.

``qms up`` serves the deployments from one runner process (``prefect.serve``). In production the
same specs are registered against a shared Prefect server (PostgreSQL) and a **process work pool**;
``prefect worker start --pool NAME`` processes (one or more, on any machine with the same installed
qmsflow and ``QMS_CONFIG``) execute the runs. Entrypoints are module paths, so nothing is pulled:
a worker imports the flows from its installed package (docs/adr/0016-production-topology.md).

Registering is idempotent: the work pool is created when missing (never changed when it exists,
except its concurrency limit when one is given), each deployment is upserted by its name, its
schedule is replaced by the one of qms.yaml, and its concurrency limit is set to the one of its spec
(or of ``--limit``). Running it twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import DEPLOYMENTS, DeploymentSpec, schedule_for

POOL_TYPE = "process"  # created when missing
# pools whose workers can run module-path entrypoints from an installed qmsflow: a process worker on a
# host with it, or Kubernetes jobs from its image (deploy/kubernetes/base-job-template.json)
POOL_TYPES = ("process", "kubernetes")


class TopologyError(Exception):
    """Registration cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class Registered:
    name: str  # flow/deployment
    deployment_id: str
    cron: str | None
    concurrency_limit: int | None


def full_name(spec: DeploymentSpec) -> str:
    return f"{spec.flow.name}/{spec.name}"


def enabled_integrations(config: Any) -> frozenset[str]:
    """Integrations switched on in this environment (their secrets are set): the same rule as the runner."""
    from qmsflow.adapters import jira, slack

    return frozenset(name for name, on in (("slack", slack.settings(config)), ("jira", jira.settings(config))) if on)


def limits_for(overrides: dict[str, int] | None = None) -> dict[str, int | None]:
    """The concurrency limit of every deployment: its spec's, unless ``overrides`` names it (0: none)."""
    overrides = dict(overrides or {})
    known = {full_name(s) for s in DEPLOYMENTS}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TopologyError(f"no deployment named {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    out: dict[str, int | None] = {}
    for spec in DEPLOYMENTS:
        limit = overrides.get(full_name(spec), spec.concurrency_limit)
        out[full_name(spec)] = limit if limit else None
    return out


def plan(config: Any, overrides: dict[str, int] | None = None) -> list[tuple[DeploymentSpec, str | None, int | None]]:
    """(spec, cron, concurrency limit) of every deployment, from qms.yaml and this environment."""
    from . import schedules_of

    schedules = schedules_of(config)
    enabled = enabled_integrations(config)
    limits = limits_for(overrides)
    return [(spec, schedule_for(spec, schedules, enabled), limits[full_name(spec)]) for spec in DEPLOYMENTS]


def ensure_pool(client: Any, pool: str, pool_limit: int | None) -> str:
    """Create the process work pool when missing; 'created', 'exists' or 'updated' (its limit)."""
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    try:
        existing = client.read_work_pool(pool)
    except ObjectNotFound:
        existing = None
    if existing is None:
        client.create_work_pool(WorkPoolCreate(name=pool, type=POOL_TYPE, concurrency_limit=pool_limit))
        return "created"
    if existing.type not in POOL_TYPES:
        raise TopologyError(
            f"work pool {pool!r} is of type {existing.type!r}: qmsflow's deployments run in a process pool "
            "(or a kubernetes pool of the qmsflow image): module-path entrypoints from the installed "
            "package; name another pool with --pool"
        )
    if pool_limit is not None and existing.concurrency_limit != pool_limit:
        client.update_work_pool(pool, WorkPoolUpdate(concurrency_limit=pool_limit))
        return "updated"
    return "exists"


def register(
    config: Any,
    api_url: str,
    pool: str,
    *,
    pool_limit: int | None = None,
    overrides: dict[str, int] | None = None,
) -> tuple[str, list[Registered]]:
    """Register every deployment against ``api_url`` in the process work pool ``pool`` (idempotent)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.types.entrypoint import EntrypointType

    planned = plan(config, overrides)
    registered: list[Registered] = []
    with temporary_settings({PREFECT_API_URL: api_url}):
        try:
            with get_client(sync_client=True) as client:
                health = client.api_healthcheck()  # returns the error rather than raising it
                if health is not None:
                    raise TopologyError(f"the Prefect API at {api_url} does not answer: {health}")
                pool_state = ensure_pool(client, pool, pool_limit)
        except TopologyError:
            raise
        except Exception as exc:  # noqa: BLE001 - connection and HTTP errors come in many types
            raise TopologyError(f"cannot reach the Prefect API at {api_url}: {exc.__class__.__name__}: {exc}") from None
        from prefect.schedules import Cron

        for spec, cron, limit in planned:
            when: dict[str, Any] = {"cron": cron}
            if cron and spec.local_time:  # read in the organisation's time zone
                when = {"schedule": Cron(cron, timezone=config.organisation.timezone)}
            deployment = spec.flow.to_deployment(
                name=spec.name,
                **when,
                parameters=dict(spec.parameters),
                description=spec.description,
                tags=["qmsflow"] + ([f"process:{spec.process}"] if spec.process else []),
                entrypoint_type=EntrypointType.MODULE_PATH,
                concurrency_limit=limit,
                work_pool_name=pool,
            )
            try:
                deployment_id = deployment.apply(work_pool_name=pool)
            except Exception as exc:  # noqa: BLE001
                raise TopologyError(f"cannot register {full_name(spec)} at {api_url}: {exc}") from None
            registered.append(Registered(full_name(spec), str(deployment_id), cron, limit))
        with get_client(sync_client=True) as client:
            _drop_stale_schedules(client, registered)
    return pool_state, registered


def _drop_stale_schedules(client: Any, registered: list[Registered]) -> None:
    """A deployment whose schedule qms.yaml removed (or an integration switched off) keeps none."""
    from uuid import UUID

    for item in registered:
        deployment = client.read_deployment(UUID(item.deployment_id))
        wanted = {item.cron} if item.cron else set()
        for schedule in deployment.schedules:
            cron = getattr(schedule.schedule, "cron", None)
            if cron not in wanted:
                client.delete_deployment_schedule(deployment.id, schedule.id)
            else:
                wanted.discard(cron)
