"""A pass's plan: the decision (status, Events), the children it asks for, rendered (what to
apply, in order, and what to delete), and what the registry is told.

Pure. `decide` (aliasop.rollout) says which version each side runs and with how many pods;
this turns that into manifests for every side, the Services and the PodDisruptionBudget,
decides which children the spec no longer has a use for, and which version tags change. The
reconciler carries the plan out as it is and decides nothing of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aliasop.builders import (
    FIELD_MANAGER,
    HANDOVER_FIELD_MANAGER,
    Manifest,
    ServingDefaults,
    get_deployment,
    get_disruption_budget,
    get_replicas_handover,
    get_service,
    service_suffix,
)
from aliasop.deployments import ObservedDeployment
from aliasop.domain import CANARY, CHALLENGER, MAIN, Owner, PinnedVersion, Side
from aliasop.models import ModelDeploymentSpec, ModelDeploymentStatus
from aliasop.rollout import Decision, TagWrite, registry_records


@dataclass(frozen=True)
class SeenChildren:
    """The children of one resource as their watch last showed them."""

    main: ObservedDeployment | None = None
    # The Deployments of the other sides, by variant (canary, challenger).
    sides: Mapping[str, ObservedDeployment] = field(default_factory=dict)
    # The revision (builders.get_child_revision) of each Service by its name's suffix ("" for
    # the resource's own, "stable", "canary", "challenger"), and of the PodDisruptionBudget.
    services: Mapping[str, str] = field(default_factory=dict)
    budget: str | None = None


@dataclass(frozen=True)
class Apply:
    """A server-side apply; `current_revision`: the object's as watched (None: none seen)."""

    manifest: Manifest
    current_revision: str | None
    what: str  # the child, named for people when the API server refuses it
    field_manager: str = FIELD_MANAGER


@dataclass(frozen=True)
class ChildrenPlan:
    apply: tuple[Apply, ...] = ()
    delete: tuple[Manifest, ...] = ()


@dataclass(frozen=True)
class Plan:
    """Everything one pass does, decided before any of it is done."""

    decision: Decision  # the status to write and the Events to post
    children: ChildrenPlan
    registry_writes: tuple[TagWrite, ...]  # version tags (ALIASOP_REGISTRY_WRITE_BACK)


def plan_pass(
    owner: Owner,
    spec: ModelDeploymentSpec,
    stored: ModelDeploymentStatus,
    decision: Decision,
    seen: SeenChildren,
    defaults: ServingDefaults,
) -> Plan:
    """The plan of a pass that decided `decision` from the `stored` status."""
    resource = f"{owner.namespace}/{owner.name}"
    return Plan(
        decision,
        plan_children(owner, spec, decision, seen, defaults),
        tuple(registry_records(stored, decision.status, resource)),
    )


def variants_in_use(spec: ModelDeploymentSpec) -> tuple[str, ...]:
    """The sides with a Service of their own: the main side and the canary (Canary strategy)
    or the challenger; none without either."""
    if spec.canary:
        return (MAIN, CANARY)
    if spec.challenger is not None:
        return (MAIN, CHALLENGER)
    return ()


def plan_children(
    owner: Owner,
    spec: ModelDeploymentSpec,
    decision: Decision,
    seen: SeenChildren,
    defaults: ServingDefaults,
) -> ChildrenPlan:
    """Every child `decision` asks for, and every one it no longer has a use for."""
    applies: list[Apply] = []
    deletes: list[Manifest] = []
    main = seen.main
    in_use = variants_in_use(spec)
    if decision.pin is not None:
        if spec.replicas is None and main is not None and main.replicas_applied:
            handover = get_replicas_handover(owner, main.desired_replicas)
            applies.append(Apply(handover, None, "Deployment", HANDOVER_FIELD_MANAGER))
        deployment = get_deployment(
            owner, spec, decision.pin, defaults, replicas=decision.stable_replicas
        )
        applies.append(Apply(deployment, main.revision if main is not None else None, "Deployment"))
        for variant in ("", *in_use):
            suffix = service_suffix(variant) if variant else ""
            service = get_service(owner, spec, variant)
            applies.append(Apply(service, seen.services.get(suffix), "Service"))
        budget = get_disruption_budget(owner, spec)
        if spec.serving.disruption_budget is not None:
            applies.append(Apply(budget, seen.budget, "PodDisruptionBudget"))
        elif seen.budget is not None:
            deletes.append(budget)
    for variant, side in ((CANARY, decision.canary), (CHALLENGER, decision.challenger)):
        applied, retired = _side(owner, spec, variant, side, seen, defaults)
        applies.extend(applied)
        deletes.extend(retired)
    if not in_use and service_suffix(MAIN) in seen.services:  # no sides: no side's Service
        deletes.append(get_service(owner, spec, MAIN))
    return ChildrenPlan(tuple(applies), tuple(deletes))


def _side(
    owner: Owner,
    spec: ModelDeploymentSpec,
    variant: str,
    side: Side | None,
    seen: SeenChildren,
    defaults: ServingDefaults,
) -> tuple[list[Apply], list[Manifest]]:
    """The Deployment of the canary or the challenger as decided. Once the spec no longer has
    that side, its Deployment goes when drained, and its Services go."""
    observed = seen.sides.get(variant)
    applies: list[Apply] = []
    deletes: list[Manifest] = []
    if side is not None:
        manifest = get_deployment(
            owner, spec, side.pin, defaults, variant=variant, replicas=side.replicas
        )
        revision = observed.revision if observed else None
        applies.append(Apply(manifest, revision, f"{variant}'s Deployment"))
    if variant in variants_in_use(spec):
        return applies, deletes
    if observed is not None and observed.desired_replicas == 0 and side is None:
        pin = PinnedVersion(observed.version, observed.run_id)
        deletes.append(get_deployment(owner, spec, pin, defaults, variant=variant))
    if service_suffix(variant) in seen.services:
        deletes.append(get_service(owner, spec, variant))
    return applies, deletes
