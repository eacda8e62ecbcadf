"""Prometheus metrics, all prefixed `aliasop_`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
LEADER = Gauge(
    "aliasop_leader", "1 while this replica leads (writes); 0 while it stands by (--leader-elect)."
)
MEASUREMENTS = Counter(
    "aliasop_analysis_measurements_total",
    "Measurements of canary analyses, by phase (Successful, Failed, Error).",
    ["phase"],
)
