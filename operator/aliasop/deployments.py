"""What rollout decisions read of a Deployment aliasop applied: pure, from the object as watched."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aliasop.builders import (
    FIELD_MANAGER,
    RUN_ID_ANNOTATION,
    VARIANT_LABEL,
    VERSION_LABEL,
    get_child_revision,
)


@dataclass(frozen=True)
class ObservedDeployment:
    """The parts of the child Deployment that rollout decisions read."""

    version: str
    run_id: str
    revision: str  # builders.get_child_revision: changes when someone edits it
    replicas_applied: bool  # aliasop's server-side apply owns spec.replicas
    generation: int
    observed_generation: int
    desired_replicas: int
    replicas: int
    updated_replicas: int
    available_replicas: int
    deadline_exceeded: bool
    variant: str  # its pods' variant label (builders.get_variant_labels); "": none

    @property
    def up_to_date(self) -> bool:
        """The Deployment controller has seen the current template."""
        return self.observed_generation >= self.generation

    @property
    def rolled_out(self) -> bool:
        """Every pod runs the current template and is available; no old pod is left."""
        return (
            self.up_to_date
            and self.updated_replicas >= self.desired_replicas
            and self.replicas == self.updated_replicas
            and self.available_replicas >= self.desired_replicas
        )


def observe_deployment(deployment: Mapping[str, Any]) -> ObservedDeployment:
    """Read an apps/v1 Deployment (as a camelCase dict) into an ObservedDeployment."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    template_meta = (spec.get("template") or {}).get("metadata") or {}
    progressing: dict[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {}
    )
    return ObservedDeployment(
        version=(template_meta.get("labels") or {}).get(VERSION_LABEL, ""),
        run_id=(template_meta.get("annotations") or {}).get(RUN_ID_ANNOTATION, ""),
        revision=get_child_revision(deployment),
        replicas_applied=_owns_replicas(meta.get("managedFields") or []),
        generation=meta.get("generation") or 0,
        observed_generation=status.get("observedGeneration") or 0,
        desired_replicas=spec.get("replicas", 1),
        replicas=status.get("replicas") or 0,
        updated_replicas=status.get("updatedReplicas") or 0,
        available_replicas=status.get("availableReplicas") or 0,
        deadline_exceeded=progressing.get("reason") == "ProgressDeadlineExceeded",
        variant=(template_meta.get("labels") or {}).get(VARIANT_LABEL, ""),
    )


def _owns_replicas(managed_fields: list[dict[str, Any]]) -> bool:
    """Whether aliasop's apply set spec.replicas last (the Deployment's managedFields)."""
    return any(
        entry.get("manager") == FIELD_MANAGER
        and entry.get("operation") == "Apply"
        and "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {})
        for entry in managed_fields
    )
