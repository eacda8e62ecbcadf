"""The capacity check of plans, for the unit tests of decisions (test_capacity, test_states)."""

from __future__ import annotations

from aliasop.builders import VARIANT_LABEL, VERSION_LABEL
from aliasop.plan import ChildrenPlan, SeenChildren


def check(seen: SeenChildren, plan: ChildrenPlan, replicas: int) -> None:
    """What `plan` keeps available of what `seen` shows, whatever the pods do next, is at
    least spec.replicas (or all there were): a side keeps at most its new count of its
    available pods; a deleted one keeps none, and so does one scaled down while it rolls or in
    the apply that changes its template (the controller scales its ReplicaSets in proportion,
    available pods with unready ones)."""
    before = {"bikes": seen.main, **{f"bikes-{v}": d for v, d in seen.sides.items()}}
    planned: dict[str, tuple[str, str, int] | None] = {}
    for step in plan.apply:
        manifest = step.manifest
        if manifest["kind"] == "Deployment" and "template" in manifest["spec"]:
            labels = manifest["spec"]["template"]["metadata"]["labels"]
            planned[manifest["metadata"]["name"]] = (
                labels[VERSION_LABEL],
                labels.get(VARIANT_LABEL, ""),
                manifest["spec"]["replicas"],
            )
    for manifest in plan.delete:
        if manifest["kind"] == "Deployment":
            planned[manifest["metadata"]["name"]] = None
    kept = 0
    for name, observed in before.items():
        if observed is None:
            continue
        if name not in planned:
            kept += observed.available_replicas
            continue
        wanted = planned[name]
        if wanted is None:
            continue
        version, variant, count = wanted
        settled = observed.rolled_out and (observed.version, observed.variant) == (
            version,
            variant,
        )
        if count < observed.desired_replicas and not settled:
            continue  # any of its available pods may go
        kept += min(observed.available_replicas, count)
    had = sum(d.available_replicas for d in before.values() if d is not None)
    assert kept >= min(replicas, had), f"{kept} of {had} pods kept available"
