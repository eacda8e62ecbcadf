"""Prometheus metrics, all prefixed `aliasop_`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RESOLUTIONS = Counter(
    "aliasop_resolutions_total", "Alias resolutions against MLflow, by result.", ["result"]
)
RESOLUTION_SECONDS = Histogram(
    "aliasop_resolution_seconds",
    "Time to resolve one alias to a version.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ROLLOUTS = Counter("aliasop_rollouts_total", "Rollout transitions, by event reason.", ["reason"])
RECONCILE_ERRORS = Counter(
    "aliasop_reconcile_errors_total", "Reconciliations that failed on a Kubernetes API error."
)
WATCHED = Gauge("aliasop_watched_resources", "ModelDeployments the operator is following.")
