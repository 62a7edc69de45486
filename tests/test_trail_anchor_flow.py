"""The scheduled anchor: a flow that takes no parameter, served hourly by the stack."""

from __future__ import annotations

import inspect


def test_the_anchor_flow_takes_no_parameter_and_its_deployment_passes_none() -> None:
    from deployments import DEPLOYMENTS
    from flows.trail_anchor import trail_anchor

    assert list(inspect.signature(trail_anchor.fn).parameters) == []
    [spec] = [d for d in DEPLOYMENTS if d.flow is trail_anchor]
    assert (spec.name, spec.cron, spec.takes_config) == ("hourly", "41 * * * *", False)


def test_the_runner_serves_it_without_a_config_parameter() -> None:
    import deployments

    built = {f"{d.flow_name}/{d.name}": d for d in deployments.build({}, "/repo/qms.yaml")}
    assert built["trail-anchor/hourly"].parameters == {}
    assert built["document-review-due-scan/daily"].parameters == {"config": "/repo/qms.yaml"}
