"""The scheduled anchor: a flow that takes no parameter, served hourly by the stack."""

from __future__ import annotations

import inspect


def test_the_anchor_flow_takes_no_parameter_and_its_deployment_passes_none() -> None:
    from deployments import DEPLOYMENTS
    from flows.trail_anchor import trail_anchor

    assert list(inspect.signature(trail_anchor.fn).parameters) == []
    [spec] = [d for d in DEPLOYMENTS if d.flow is trail_anchor]
    assert (spec.name, spec.cron, spec.parameters) == ("hourly", "41 * * * *", {})


def test_the_runner_serves_it_without_a_config_parameter() -> None:
    import deployments

    built = {f"{d.flow_name}/{d.name}": d for d in deployments.build({})}
    assert built["trail-anchor/hourly"].parameters == {}
    assert built["trail-anchor/hourly"].schedules  # hourly, whatever integrations are on
    # no deployment carries the configuration: a run reads qms.yaml from the worker's environment
    assert all("config" not in d.parameters for d in built.values())
