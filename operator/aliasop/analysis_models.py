"""The analysis step of a canary (issue 18): its spec, and the measurements kept in status.

Plain data on `aliasop.modelbase`, like `aliasop.models`: the CRD schema of a step
comes from them (`aliasop.crd.analysis_step_schema`), with the CEL rules below for what an
OpenAPI schema cannot say. Each rule has its twin in a pydantic validator, so the operator
refuses what the API server refuses (tests/unit/test_analysis_models.py runs both on the same
cases).

The decision over these records is `aliasop.analysis`; the providers that take measurements
are `aliasop.analysis_providers`.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints, field_validator, model_validator

from aliasop.modelbase import CamelModel, Timestamp
from aliasop.templating import TEMPLATE_MESSAGE, TEMPLATE_PATTERN, check_template

# A metric's name: a DNS-1123 label, so it can name a label value or an Event's subject.
METRIC_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
HTTP_URL_PATTERN = r"^https?://[^\s]+$"
# The JSONPath subset a web metric reads: `$` then `.key`, `['key']`, `["key"]` or `[index]`
# steps, e.g. `$.data.scores[0].auc`.
JSON_PATH_PATTERN = r"^\$(\.[A-Za-z0-9_-]+|\[[0-9]+\]|\['[^'\[\]]+'\]|\[\"[^\"\[\]]+\"\])*$"
# An HTTP header name (RFC 9110 token).
HEADER_NAME_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
_HEADER_NAME = re.compile(HEADER_NAME_PATTERN)

MAX_METRICS = 10
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4  # Argo Rollouts' default

# CEL rules (x-kubernetes-validations) for what the schema's own keywords cannot say. The
# lead's wiring attaches them through aliasop.crd.analysis_step_schema.
PROVIDER_MESSAGE = "set exactly one provider: prometheus or web"
PROVIDER_RULE = {"rule": "has(self.prometheus) != has(self.web)", "message": PROVIDER_MESSAGE}
THRESHOLD_BOUND_MESSAGE = "thresholdRange needs min, max or both"
THRESHOLD_ORDER_MESSAGE = "thresholdRange.min may not be greater than thresholdRange.max"
THRESHOLD_RANGE_RULES = [
    {"rule": "has(self.min) || has(self.max)", "message": THRESHOLD_BOUND_MESSAGE},
    {
        "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
        "message": THRESHOLD_ORDER_MESSAGE,
    },
]
TEMPLATE_RULE = {"rule": f"self.matches(r'{TEMPLATE_PATTERN}')", "message": TEMPLATE_MESSAGE}
HEADER_NAMES_MESSAGE = "headers keys must be HTTP header names (at most 256 characters)"
HEADER_NAMES_RULE = {
    # The pattern holds a ' (a token character): a double-quoted CEL string.
    "rule": f'self.all(k, k.size() <= 256 && k.matches(r"{HEADER_NAME_PATTERN}"))',
    "message": HEADER_NAMES_MESSAGE,
}


# A query or URL with placeholders: refused when one is unknown.
Template = Annotated[str, AfterValidator(check_template)]


class PrometheusProvider(CamelModel):
    """An instant PromQL query whose answer is one number: a scalar, or a vector of one
    series."""

    address: Template = Field(
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        description="Base URL of the Prometheus HTTP API, e.g. http://prometheus.monitoring:9090; "
        "the query goes to <address>/api/v1/query. Placeholders are filled in, URL-encoded.",
    )
    query: Template = Field(
        min_length=1,
        max_length=4096,
        description="PromQL returning one number. {{version}}, {{model}}, {{namespace}}, "
        "{{name}} and {{variant}} are filled in, escaped for a quoted string: "
        'sum(rate(errors_total{version="{{version}}"}[1m])).',
    )


class WebProvider(CamelModel):
    """A GET whose JSON answer holds the number at `jsonPath`."""

    url: Template = Field(
        max_length=2048,
        pattern=HTTP_URL_PATTERN,
        description="URL to GET; placeholders ({{version}}, {{model}}, {{namespace}}, "
        "{{name}}, {{variant}}) are filled in, URL-encoded.",
    )
    json_path: str = Field(
        max_length=512,
        pattern=JSON_PATH_PATTERN,
        description="Where the number is in the JSON answer: $ then .key, ['key'] or [index] "
        "steps, e.g. $.data.scores[0].auc.",
    )
    headers: dict[str, Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=dict,
        max_length=20,
        description="Extra request headers, as written (kept in the spec: not for secrets).",
    )

    @field_validator("headers")
    @classmethod
    def _header_names(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            if len(name) > 256 or not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r}: {HEADER_NAMES_MESSAGE}")
        return headers


class ThresholdRange(CamelModel):
    """The range a measurement must fall in to pass, bounds included."""

    min: float | None = Field(None, description="Lowest passing value; none when unset.")
    max: float | None = Field(None, description="Highest passing value; none when unset.")

    @field_validator("min", "max")
    @classmethod
    def _finite(cls, bound: float | None) -> float | None:
        if bound is not None and not math.isfinite(bound):
            raise ValueError("a bound must be a finite number")
        return bound

    @model_validator(mode="after")
    def _bounded(self) -> ThresholdRange:
        if self.min is None and self.max is None:
            raise ValueError(THRESHOLD_BOUND_MESSAGE)
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(THRESHOLD_ORDER_MESSAGE)
        return self

    def contains(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


class AnalysisMetric(CamelModel):
    """One number measured `count` times, and the range it must stay in."""

    name: str = Field(
        max_length=63,
        pattern=METRIC_NAME_PATTERN,
        description="Name of the metric, unique in its step (lowercase letters, digits, '-').",
    )
    prometheus: PrometheusProvider | None = Field(
        None, description="Measure with a PromQL query; exactly one of prometheus and web."
    )
    web: WebProvider | None = Field(
        None,
        description="Measure with a GET of a JSON document; exactly one of prometheus and web.",
    )
    threshold_range: ThresholdRange = Field(
        description="A measurement passes when its value is in this range (min, max or both, "
        "inclusive)."
    )

    @model_validator(mode="after")
    def _one_provider(self) -> AnalysisMetric:
        if (self.prometheus is None) == (self.web is None):
            raise ValueError(PROVIDER_MESSAGE)
        return self


class AnalysisStep(CamelModel):
    """Measure each metric `count` times, `interval` seconds apart; more than `failureLimit`
    failed measurements of a metric, or more than `consecutiveErrorLimit` errors in a row
    (a provider that cannot be reached or answers no number), fail the analysis."""

    interval: int = Field(
        60, ge=1, le=3600, description="Seconds between two measurements of a metric."
    )
    count: int = Field(
        1, ge=1, le=100, description="Measurements of each metric (errors not counted)."
    )
    failure_limit: int = Field(
        0,
        ge=0,
        le=100,
        description="Failed measurements of a metric tolerated; one more fails the analysis.",
    )
    consecutive_error_limit: int = Field(
        DEFAULT_CONSECUTIVE_ERROR_LIMIT,
        ge=0,
        le=100,
        description="Errors in a row of a metric tolerated (the provider unreachable or "
        "answering no number); one more fails the analysis.",
    )
    metrics: list[AnalysisMetric] = Field(
        min_length=1,
        max_length=MAX_METRICS,
        description="What to measure; names unique.",
    )

    @field_validator("metrics")
    @classmethod
    def _unique_names(cls, metrics: list[AnalysisMetric]) -> list[AnalysisMetric]:
        names = [metric.name for metric in metrics]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"metric names must be unique: {', '.join(duplicates)}")
        return metrics

    def metric(self, name: str) -> AnalysisMetric | None:
        return next((m for m in self.metrics if m.name == name), None)


# What status keeps of an analysis: enough to decide it again after a restart.


class MeasurementPhase(StrEnum):
    SUCCESSFUL = "Successful"  # a number in the threshold range
    FAILED = "Failed"  # a number out of it
    ERROR = "Error"  # no number: the provider unreachable, or answering nonsense


class ErrorKind(StrEnum):
    """Why a measurement gave no number: all that status and Events show of what a provider
    answered (never its body, headers or error text: the URL is the tenant's, the request
    leaves from the operator's network position)."""

    REFUSED_HOST = "refused-host"  # not among the operator's analysis hosts: nothing sent
    INVALID_URL = "invalid-url"  # the URL, filled in, is not one a request can go to
    UNREACHABLE = "unreachable"  # no connection, or it broke off
    TIMEOUT = "timeout"  # no whole answer within the deadline
    TOO_LARGE = "too-large"  # the answer exceeded the size cap
    HTTP_STATUS = "http-status"  # an HTTP status that is not success (with the code)
    NOT_JSON = "not-json"
    NO_NUMBER = "no-number"  # JSON without one number where it should be
    NOT_FINITE = "not-finite"  # NaN or an infinity
    NO_SERIES = "no-series"  # a Prometheus query that matched nothing
    MANY_SERIES = "many-series"  # ... or more than one series
    QUERY_REFUSED = "query-refused"  # Prometheus refused the query


class AnalysisPhase(StrEnum):
    RUNNING = "Running"  # measurements to take yet
    SUCCESSFUL = "Successful"  # every metric measured `count` times within its failure limit
    FAILED = "Failed"  # a metric failed more than `failureLimit` times
    ERROR = "Error"  # a metric errored more than `consecutiveErrorLimit` times in a row

    @property
    def completed(self) -> bool:
        return self is not AnalysisPhase.RUNNING

    @property
    def aborts(self) -> bool:
        """A canary whose analysis ends so is rolled back (Argo Rollouts aborts on both)."""
        return self in (AnalysisPhase.FAILED, AnalysisPhase.ERROR)


class Measurement(CamelModel):
    """One measurement of one metric."""

    metric: str = Field(description="The metric measured.")
    phase: MeasurementPhase = Field(description="Successful, Failed or Error.")
    value: float | None = Field(None, description="The number measured; none on an error.")
    message: str = Field(
        "", description="What went wrong, on an error (its kind, explained); else empty."
    )
    error: ErrorKind | None = Field(
        None,
        description="Why there is no number, on an error: " + ", ".join(ErrorKind) + ".",
    )
    at: Timestamp = Field(description="When the measurement was taken.")


# Measurements kept per metric (the newest); the counters keep the whole story.
MEASUREMENTS_KEPT = 10


class MetricResult(CamelModel):
    """Counters of one metric's measurements so far, and the newest measurements."""

    name: str = Field(description="The metric.")
    phase: AnalysisPhase = Field(AnalysisPhase.RUNNING, description="This metric's verdict.")
    count: int = Field(0, description="Measurements that gave a number (passed or failed).")
    successful: int = Field(0, description="Measurements in the threshold range.")
    failed: int = Field(0, description="Measurements out of the threshold range.")
    errors: int = Field(0, description="Measurements that gave no number.")
    consecutive_errors: int = Field(0, description="Errors since the last number.")
    measurements: list[Measurement] = Field(
        default_factory=list,
        description=f"The newest measurements (at most {MEASUREMENTS_KEPT}), oldest first.",
    )

    @property
    def last(self) -> Measurement | None:
        return self.measurements[-1] if self.measurements else None


class AnalysisRun(CamelModel):
    """Where one analysis step stands: kept in status, so that a restarted operator resumes it
    without measuring again what it measured."""

    started_at: Timestamp = Field(description="When the step's analysis started.")
    phase: AnalysisPhase = Field(AnalysisPhase.RUNNING, description="The analysis' verdict.")
    message: str = Field("", description="Why it ended so, for people.")
    metric_results: list[MetricResult] = Field(
        default_factory=list, description="One per metric, in the step's order."
    )

    def result(self, name: str) -> MetricResult | None:
        return next((r for r in self.metric_results if r.name == name), None)

    def to_status(self) -> dict[str, Any]:
        """As stored in status (JSON, camelCase)."""
        return self.model_dump(mode="json", by_alias=True)
