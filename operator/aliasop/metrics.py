"""Prometheus metrics, all prefixed `aliasop_`."""

from __future__ import annotations

import contextlib
import platform

from prometheus_client import Counter, Gauge, Histogram

from aliasop import __version__
from aliasop.models import ConditionType, ModelDeploymentStatus, ModelUri, Outcome
from aliasop.webhooks import Rejection

REGISTRY_REQUESTS = Counter(
    "aliasop_registry_requests_total",
    "Requests sent to MLflow, by REST endpoint and HTTP status (or `unreachable`).",
    ["endpoint", "result"],
)
RESOLUTIONS = Counter(
    "aliasop_resolutions_total",
    "Alias resolutions made by resources (from the shared cache), by result.",
    ["result"],
)
RESOLUTION_SECONDS = Histogram(
    "aliasop_resolution_seconds",
    "Time a resource waits to resolve its alias to a version.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ROLLOUTS = Counter("aliasop_rollouts_total", "Rollout transitions, by event reason.", ["reason"])
RECONCILE_ERRORS = Counter(
    "aliasop_reconcile_errors_total", "Reconciliations that failed on a Kubernetes API error."
)
REGISTRY_WRITE_FAILURES = Counter(
    "aliasop_registry_write_failures_total",
    "Tags and aliases the operator could not write to MLflow (ALIASOP_REGISTRY_WRITE_BACK).",
)
WATCHED = Gauge("aliasop_watched_resources", "ModelDeployments the operator is following.")
WEBHOOK_DELIVERIES = Counter(
    "aliasop_webhook_deliveries_total",
    "MLflow webhook deliveries, by result (accepted, ignored, bad_signature, stale, ...).",
    ["result"],
)
# Every result has a series from the start (0), so that rates and alerts see the first one.
for _result in ("accepted", "ignored", "disabled", "no_leader", "passed_on", *Rejection):
    WEBHOOK_DELIVERIES.labels(result=_result)
LEADER = Gauge(
    "aliasop_leader", "1 while this replica leads (writes); 0 while it stands by (--leader-elect)."
)
MEASUREMENTS = Counter(
    "aliasop_analysis_measurements_total",
    "Measurements of canary analyses, by phase (Successful, Failed, Error).",
    ["phase"],
)
NOTIFICATIONS = Counter(
    "aliasop_notifications_total",
    "Notifications to webhook receivers, by receiver and result (delivered, refused, failed, "
    "dropped).",
    ["receiver", "result"],
)

# --- per resource: one set of series per ModelDeployment this replica leads, removed when it
# goes (docs/metrics.md counts them). Labelled `namespace` and `name`, and only by values of
# closed sets besides (phases, sides, gates, condition types), plus its model and alias.

RESOURCE_INFO = Gauge(
    "aliasop_resource_info",
    "1 per ModelDeployment: its registered model, alias and phase.",
    ["namespace", "name", "model", "alias", "phase"],
)
RESOURCE_VERSION = Gauge(
    "aliasop_resource_version",
    "Model version per side: `serving` (all pods available), `target` (rolling to), `alias` "
    "(where the alias points), `canary` and `challenger` (while they run).",
    ["namespace", "name", "side"],
)
CANARY_STEP = Gauge(
    "aliasop_canary_step",
    "The canary's step under way, from 1 (0: no canary).",
    ["namespace", "name"],
)
CANARY_WEIGHT = Gauge(
    "aliasop_canary_weight", "Percent of the replicas the canary runs.", ["namespace", "name"]
)
RESOURCE_CONDITION = Gauge(
    "aliasop_resource_condition",
    "1 while a status condition is True, 0 while False or Unknown: Ready, Reconciling, "
    "Stalled, Degraded, Progressing, RegistryAvailable and the release gates "
    "(SignatureCompatible, Approved).",
    ["namespace", "name", "type"],
)
ROLLOUT_SECONDS = Histogram(
    "aliasop_rollout_duration_seconds",
    "From a rollout's start to its end, by outcome (Succeeded, Failed, Superseded, ...).",
    ["outcome"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 21600),
)
RECONCILE_SECONDS = Histogram(
    "aliasop_reconcile_duration_seconds",
    "Time one pass of one resource takes: resolve, decide, apply, report.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BUILD_INFO = Gauge(
    "aliasop_build_info",
    "1, labelled with the operator's version and Python's.",
    ["version", "python"],
)
BUILD_INFO.labels(version=__version__, python=platform.python_version()).set(1)

_SIDES = ("serving", "target", "alias", "canary", "challenger")
_CONDITIONS = tuple(ConditionType)
# The label values of each resource's info series, to remove the old one when they change.
_info_labels: dict[tuple[str, str], tuple[str, str, str]] = {}


def observe_resource(
    key: tuple[str, str],
    model: str,
    before: ModelDeploymentStatus,
    after: ModelDeploymentStatus,
) -> None:
    """The series of one resource as its pass left it (`model`: spec.model, unparsed when the
    spec is invalid), and the rollouts this pass ended (`before` -> `after`)."""
    namespace, name = key
    try:
        uri = ModelUri.parse(model)
        info = (uri.name, uri.alias, after.phase.value)
    except ValueError:
        info = ("", "", after.phase.value)
    if _info_labels.get(key, info) != info:
        RESOURCE_INFO.remove(namespace, name, *_info_labels[key])
    _info_labels[key] = info
    RESOURCE_INFO.labels(namespace, name, *info).set(1)
    canary = after.canary
    challenger = after.challenger
    versions = {
        "serving": after.serving_version,
        "target": after.target_version,
        "alias": after.alias_version,
        "canary": canary.version if canary is not None else None,
        "challenger": challenger.serving_version if challenger is not None else None,
    }
    for side, version in versions.items():
        if version is not None and version.isdigit():
            RESOURCE_VERSION.labels(namespace, name, side).set(int(version))
        else:
            _remove(RESOURCE_VERSION, namespace, name, side)
    CANARY_STEP.labels(namespace, name).set(canary.step if canary is not None else 0)
    CANARY_WEIGHT.labels(namespace, name).set(canary.weight if canary is not None else 0)
    for type_ in _CONDITIONS:
        condition = after.condition(type_)
        if condition is None:
            _remove(RESOURCE_CONDITION, namespace, name, type_.value)
        else:
            RESOURCE_CONDITION.labels(namespace, name, type_.value).set(int(condition.is_true))
    for outcome, seconds in ended_rollouts(before, after):
        ROLLOUT_SECONDS.labels(outcome).observe(seconds)


def ended_rollouts(
    before: ModelDeploymentStatus, after: ModelDeploymentStatus
) -> list[tuple[str, float]]:
    """(outcome, seconds) of each history entry that ended between the two statuses."""
    ended_before = {
        (e.version, e.started_at) for e in before.history if e.outcome is not Outcome.PROGRESSING
    }
    return [
        (entry.outcome.value, max((entry.finished_at - entry.started_at).total_seconds(), 0.0))
        for entry in after.history
        if entry.finished_at is not None
        and entry.outcome is not Outcome.PROGRESSING
        and (entry.version, entry.started_at) not in ended_before
    ]


def forget_resource(key: tuple[str, str]) -> None:
    """Remove every series of a resource that is no longer tracked."""
    namespace, name = key
    info = _info_labels.pop(key, None)
    if info is not None:
        RESOURCE_INFO.remove(namespace, name, *info)
    for side in _SIDES:
        _remove(RESOURCE_VERSION, namespace, name, side)
    _remove(CANARY_STEP, namespace, name)
    _remove(CANARY_WEIGHT, namespace, name)
    for type_ in _CONDITIONS:
        _remove(RESOURCE_CONDITION, namespace, name, type_.value)


def _remove(metric: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never set
        metric.remove(*labels)
