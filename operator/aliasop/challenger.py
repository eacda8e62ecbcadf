"""Champion-challenger decisions: the challenger alias's version + what both Deployments show
-> the challenger side to apply, the main side's share, and the challenger's status.

Pure. The challenger runs beside the main side for as long as `spec.challenger` is set, at its
weight as a replica ratio (the canary's rule, aliasop.canary.scale: capacity never drops
below spec.replicas). Each alias moves its own side only: the challenger's Deployment follows
its alias with a plain rolling update; the main side's rollouts are aliasop.rollout's. When the
registry cannot say where the challenger's alias points, its side is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aliasop.canary import canary_pods, drain, ready_pods, scale
from aliasop.deployments import ObservedDeployment
from aliasop.domain import PinnedVersion, Side
from aliasop.events import Event, EventType
from aliasop.models import (
    ChallengerStatus,
    ModelDeploymentSpec,
    Reason,
    RegistryProblem,
    ResolvedVersion,
)


@dataclass
class ChallengerPlan:
    status: ChallengerStatus | None
    side: Side | None = None  # the challenger Deployment to apply; None: leave it as it is
    main_replicas: int | None = None  # the main side's share; None: spec.replicas
    events: list[Event] = field(default_factory=list)
    observed: ObservedDeployment | None = None  # the challenger Deployment as watched


def plan(
    spec: ModelDeploymentSpec,
    previous: ChallengerStatus | None,
    resolution: ResolvedVersion | RegistryProblem | None,
    main: ObservedDeployment | None,
    challenger: ObservedDeployment | None,
) -> ChallengerPlan:
    """`resolution`: the challenger alias resolved (None without spec.challenger)."""
    replicas = spec.replicas or 0
    wanted = spec.challenger
    if wanted is None:  # none (any more): its pods go once the main side is whole again
        if challenger is None or challenger.desired_replicas == 0:
            return ChallengerPlan(None, observed=challenger)
        drained = Side(
            PinnedVersion(challenger.version, challenger.run_id),
            drain(replicas, main, challenger),
        )
        return ChallengerPlan(None, drained, observed=challenger)
    status = ChallengerStatus(alias=wanted.alias, weight=wanted.weight)
    if previous is not None and previous.alias == wanted.alias:
        status.alias_version = previous.alias_version
    events: list[Event] = []
    pin: PinnedVersion | None = None
    if isinstance(resolution, ResolvedVersion):
        if status.alias_version not in (None, resolution.version):
            events.append(
                Event(
                    EventType.NORMAL,
                    Reason.CHALLENGER_MOVED,
                    f"challenger @{wanted.alias} moved from version {status.alias_version} to "
                    f"{resolution.version}: its side rolls to it",
                )
            )
        status.alias_version = resolution.version
        pin = PinnedVersion(resolution.version, resolution.run_id)
    elif challenger is not None:  # the registry cannot say: the side stays as it is
        pin = PinnedVersion(challenger.version, challenger.run_id)
    if isinstance(resolution, RegistryProblem):
        status.message = f"@{wanted.alias}: {resolution.message}"
    pods = canary_pods(wanted.weight, replicas)
    if challenger is not None and ready_pods(challenger, challenger.version) >= pods:
        status.serving_version = challenger.version if challenger.rolled_out else None
    if pin is None:
        return ChallengerPlan(status, events=events, observed=challenger)
    main_version = main.version if main is not None else ""
    sides = scale(replicas, pods, main, main_version, challenger, pin.version)
    if not status.message:
        status.message = (
            f"version {status.serving_version} serves {wanted.weight}% of the pods"
            if status.serving_version == pin.version
            else f"rolling out version {pin.version} at {wanted.weight}% of the pods"
        )
    return ChallengerPlan(status, Side(pin, sides.canary), sides.stable, events, challenger)
