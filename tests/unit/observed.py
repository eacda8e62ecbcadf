"""Deployments as the watch shows them, for the unit tests of decisions."""

from __future__ import annotations

from aliasop.deployments import ObservedDeployment


def observed(
    version: str, replicas: int = 2, available: int | None = None, variant: str = "main"
) -> ObservedDeployment:
    """A Deployment of `version` whose `replicas` pods all run its template, `available` of
    them available (default: all), its pods labelled `variant`."""
    return ObservedDeployment(
        version=version,
        run_id=f"run{version}",
        revision="1",
        replicas_applied=True,
        generation=1,
        observed_generation=1,
        desired_replicas=replicas,
        replicas=replicas,
        updated_replicas=replicas,
        available_replicas=replicas if available is None else available,
        deadline_exceeded=False,
        variant=variant,
    )
