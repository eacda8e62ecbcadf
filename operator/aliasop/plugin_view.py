"""What `kubectl aliasop get | list` shows of a ModelDeployment (pure: no I/O).

A view is built from the resource as the API server returns it and its serving pods; it
renders as a tree a person reads at a glance, or as JSON (`-o json`) for scripts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from aliasop.builders import VARIANT_LABEL, VERSION_LABEL
from aliasop.models import (
    CanaryPhase,
    ConditionType,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Outcome,
)

HISTORY_SHOWN = 3  # the newest history entries `get` shows; `-o json` has them all
# The release gates' conditions: a version passes them before it rolls out.
GATES = (ConditionType.SIGNATURE_COMPATIBLE, ConditionType.APPROVED)
# Shown under "conditions": the kstatus ones and the registry's.
SHOWN_CONDITIONS = (
    ConditionType.READY,
    ConditionType.RECONCILING,
    ConditionType.STALLED,
    ConditionType.REGISTRY_AVAILABLE,
)


@dataclass(frozen=True)
class PodCount:
    """Serving pods of one version on one side: how many, how many Ready."""

    version: str
    variant: str  # main, canary, challenger
    ready: int
    total: int


@dataclass(frozen=True)
class MetricView:
    name: str
    phase: str
    last_value: float | None
    successful: int
    failed: int
    errors: int


@dataclass(frozen=True)
class ResourceView:
    namespace: str
    name: str
    model: str
    alias: str
    phase: str
    message: str
    paused: bool
    strategy: str
    alias_version: str | None
    target_version: str | None
    serving_version: str | None
    last_good_version: str | None
    failed_version: str | None
    held_version: str | None
    serving_version_url: str | None
    canary: dict[str, Any] | None  # version, stableVersion, step, steps, weight, phase
    analysis: list[MetricView]
    gates: dict[str, dict[str, str]]  # condition type -> status, reason, message
    conditions: dict[str, dict[str, str]]
    challenger: dict[str, Any] | None
    pods: list[PodCount]
    history: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)  # what could not be read

    def to_json(self) -> dict[str, Any]:
        """As `-o json` prints it: camelCase, as Kubernetes spells fields."""
        shown: dict[str, Any] = _camel_fields(self)
        return shown


def _camel_fields(value: Any) -> Any:
    """A dataclass as a dict with camelCase keys, recursively; values as they are."""
    if is_dataclass(value) and not isinstance(value, type):
        return {to_camel(f.name): _camel_fields(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, list):
        return [_camel_fields(item) for item in value]
    return value


def count_pods(pods: Iterable[Mapping[str, Any]]) -> list[PodCount]:
    """Serving pods by version and side, Ready ones apart (terminating ones left out)."""
    total: Counter[tuple[str, str]] = Counter()
    ready: Counter[tuple[str, str]] = Counter()
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        labels = meta.get("labels") or {}
        key = (str(labels.get(VERSION_LABEL, "?")), str(labels.get(VARIANT_LABEL, "main")))
        total[key] += 1
        conditions = (pod.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            ready[key] += 1
    return [
        PodCount(version=v, variant=side, ready=ready[v, side], total=n)
        for (v, side), n in sorted(total.items(), key=lambda item: (_version_order(item[0][0]),))
    ]


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)


def build_view(resource: Mapping[str, Any], pods: Iterable[Mapping[str, Any]] = ()) -> ResourceView:
    """The view of `resource` (a ModelDeployment as the API server returns it)."""
    meta = resource.get("metadata") or {}
    problems: list[str] = []
    spec_data = resource.get("spec") or {}
    model, alias, strategy = str(spec_data.get("model", "")), "", ""
    try:
        spec = ModelDeploymentSpec.model_validate(spec_data)
        model, alias = spec.model_uri.name, spec.model_uri.alias
        strategy = spec.rollout.strategy.value
    except ValidationError as exc:
        problems.append(f"spec does not parse ({exc.error_count()} errors)")
    try:
        status = ModelDeploymentStatus.model_validate(resource.get("status") or {})
    except ValidationError as exc:
        problems.append(f"status does not parse ({exc.error_count()} errors)")
        status = ModelDeploymentStatus()
    canary = None
    analysis: list[MetricView] = []
    if status.canary is not None:
        canary = status.canary.model_dump(
            mode="json", by_alias=True, include={"version", "stable_version", "step", "steps"}
        ) | {"weight": status.canary.weight, "phase": status.canary.phase.value}
        run = status.canary.analysis
        for result in run.metric_results if run is not None else []:
            last = result.last
            analysis.append(
                MetricView(
                    name=result.name,
                    phase=result.phase.value,
                    last_value=last.value if last is not None else None,
                    successful=result.successful,
                    failed=result.failed,
                    errors=result.errors,
                )
            )

    def conditions(types: Iterable[ConditionType]) -> dict[str, dict[str, str]]:
        shown = {}
        for type_ in types:
            condition = status.condition(type_)
            if condition is not None:
                shown[type_.value] = {
                    "status": condition.status,
                    "reason": condition.reason,
                    "message": condition.message,
                }
        return shown

    challenger = None
    if status.challenger is not None:
        challenger = status.challenger.model_dump(mode="json", by_alias=True)
    return ResourceView(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        model=model,
        alias=alias,
        phase=status.phase.value,
        message=status.message,
        paused=bool(spec_data.get("paused", False)),
        strategy=strategy,
        alias_version=status.alias_version,
        target_version=status.target_version,
        serving_version=status.serving_version,
        last_good_version=status.last_good_version,
        failed_version=status.failed_version,
        held_version=status.held_version,
        serving_version_url=status.serving_version_url,
        canary=canary,
        analysis=analysis,
        gates=conditions(GATES),
        conditions=conditions(SHOWN_CONDITIONS),
        challenger=challenger,
        pods=count_pods(pods),
        history=[entry.model_dump(mode="json", by_alias=True) for entry in status.history],
        problems=problems,
    )


def undo_target(status: ModelDeploymentStatus) -> str | None:
    """Where `undo` moves the alias: the newest version in history that rolled out, other
    than the one the alias points at now; None when there is none."""
    current = status.alias_version or status.target_version
    return next(
        (
            entry.version
            for entry in status.history
            if entry.outcome is Outcome.SUCCEEDED and entry.version != current
        ),
        None,
    )


def _or_dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _ago(timestamp: str | None, now: datetime) -> str:
    """ "3m ago" from an RFC 3339 time; "-" without one."""
    if not timestamp:
        return "-"
    seconds = int((now - datetime.fromisoformat(timestamp.replace("Z", "+00:00"))).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


def next_step_hint(view: ResourceView) -> str:
    """What a person may do next, for the states that wait for one."""
    name = view.name
    if view.paused:
        return f"paused: alias moves are not rolled out until `kubectl aliasop resume {name}`"
    if view.canary is not None and view.canary["phase"] == CanaryPhase.PAUSED.value:
        return (
            f"canary {view.canary['version']} waits: `kubectl aliasop promote {name}` "
            f"(or `abort {name}`)"
        )
    if view.failed_version is not None:
        return (
            f"version {view.failed_version} failed: `kubectl aliasop retry {name}` runs it "
            f"again, `kubectl aliasop undo {name}` moves the alias back"
        )
    return ""


def render_tree(view: ResourceView, now: datetime, history: int = HISTORY_SHOWN) -> str:
    """The view as an indented tree, one fact per line."""
    lines = [
        f"{view.namespace}/{view.name}  {view.model}@{view.alias}  {view.phase}"
        + ("  (paused)" if view.paused else ""),
    ]
    if view.message:
        lines.append(f"├─ message: {view.message}")
    lines.append(
        f"├─ versions: alias {_or_dash(view.alias_version)}  target {_or_dash(view.target_version)}"
        f"  serving {_or_dash(view.serving_version)}  last good {_or_dash(view.last_good_version)}"
        + (f"  failed {view.failed_version}" if view.failed_version else "")
        + (f"  held {view.held_version}" if view.held_version else "")
    )
    if view.serving_version_url:
        lines.append(f"├─ mlflow: {view.serving_version_url}")
    strategy = f"├─ strategy: {view.strategy or '-'}"
    if view.canary is not None:
        c = view.canary
        strategy += (
            f"  canary {c['version']} beside stable {c['stableVersion']}: step {c['step']}/"
            f"{c['steps']} weight {c['weight']}% {c['phase']}"
        )
    lines.append(strategy)
    for metric in view.analysis:
        lines.append(
            f"│  └─ analysis {metric.name}: {metric.phase}  last {_or_dash(metric.last_value)}"
            f"  ({metric.successful} passed, {metric.failed} failed, {metric.errors} errors)"
        )
    if view.challenger is not None:
        c = view.challenger
        lines.append(
            f"├─ challenger @{c['alias']}: alias {_or_dash(c.get('aliasVersion'))}  serving "
            f"{_or_dash(c.get('servingVersion'))}  weight {c['weight']}%"
        )
    lines.append("├─ gates:" + ("" if view.gates else " none checked"))
    for type_, condition in view.gates.items():
        detail = f": {condition['message']}" if condition["message"] else ""
        lines.append(f"│  └─ {type_} {condition['status']} ({condition['reason']}){detail}")
    lines.append("├─ pods:" + ("" if view.pods else " none"))
    for pods in view.pods:
        lines.append(
            f"│  └─ version {pods.version} ({pods.variant}): {pods.ready}/{pods.total} ready"
        )
    lines.append(
        "├─ conditions: "
        + "  ".join(
            f"{type_}={c['status']}" + (f"({c['reason']})" if c["status"] == "True" else "")
            for type_, c in view.conditions.items()
        )
    )
    lines.append("└─ history:" + ("" if view.history else " none"))
    for entry in view.history[:history]:
        message = f"  {entry['message']}" if entry.get("message") else ""
        lines.append(
            f"   └─ {entry['version']}  {entry['reason']}  {entry['outcome']}  started "
            f"{_ago(entry.get('startedAt'), now)}{message}"
        )
    for problem in view.problems:
        lines.append(f"!  {problem}")
    hint = next_step_hint(view)
    if hint:
        lines.append(f"→  {hint}")
    return "\n".join(lines) + "\n"


def render_list(views: Iterable[ResourceView]) -> str:
    """One line per resource: where it is and what it waits for, at a glance."""
    rows = [("NAMESPACE", "NAME", "MODEL", "SERVING", "TARGET", "PHASE", "CANARY", "WAITS")]
    for view in views:
        canary = "-"
        if view.canary is not None:
            c = view.canary
            canary = f"{c['version']} step {c['step']}/{c['steps']} {c['weight']}% {c['phase']}"
        rows.append(
            (
                view.namespace,
                view.name,
                f"{view.model}@{view.alias}",
                _or_dash(view.serving_version),
                _or_dash(view.target_version),
                view.phase + (" (paused)" if view.paused else ""),
                canary,
                "yes" if next_step_hint(view) else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in rows
    )
