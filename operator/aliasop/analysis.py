"""Analysis decisions: measurements so far + the clock -> what to measure, and the verdict.

Pure. The semantics are Argo Rollouts' (its analysis controller, for one step with one
`interval`, `count`, `failureLimit` and `consecutiveErrorLimit` shared by its metrics):

- each metric is measured at once when the analysis starts, then `interval` seconds after its
  previous measurement finished, until it has `count` measurements that gave a number;
- a measurement gives a number in the threshold range (Successful), one out of it (Failed), or
  no number at all (Error: the provider could not be reached, or answered nonsense). Errors
  are not counted toward `count` and never pass or fail by themselves; they are retried at
  `interval`;
- a metric fails when its failed measurements exceed `failureLimit`, errors when its errors in
  a row exceed `consecutiveErrorLimit` (a number resets the streak), and succeeds when it has
  `count` numbers within the limits;
- the analysis fails (Failed or Error, the worse: Failed) as soon as one metric does, with no
  further measurement; it succeeds when every metric has; else it is Running.

Everything the verdict and the schedule need is in the `AnalysisRun` kept in status, so a
restarted operator resumes it: a measurement recorded is never taken again.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from aliasop.analysis_models import (
    MEASUREMENTS_KEPT,
    AnalysisMetric,
    AnalysisPhase,
    AnalysisRun,
    AnalysisStep,
    ErrorKind,
    Measurement,
    MeasurementPhase,
    MetricResult,
    ThresholdRange,
)
from aliasop.clock import Clock
from aliasop.interfaces import MetricProvider
from aliasop.templating import TemplateContext

# What each kind means, in fixed words of ours.
_HINTS = {
    ErrorKind.REFUSED_HOST: "not among the operator's analysis hosts "
    "(ALIASOP_ANALYSIS_ALLOWED_HOSTS); no request was sent",
    ErrorKind.INVALID_URL: "the URL with its placeholders filled in is not a valid URL",
    ErrorKind.UNREACHABLE: "no connection to the provider",
    ErrorKind.TIMEOUT: "no whole answer in time",
    ErrorKind.TOO_LARGE: "the answer is larger than a measurement can be",
    ErrorKind.HTTP_STATUS: "the provider did not answer with success",
    ErrorKind.NOT_JSON: "the answer is not JSON",
    ErrorKind.NO_NUMBER: "no number where the metric reads it",
    ErrorKind.NOT_FINITE: "the value is NaN or infinite (a division by zero, or no requests "
    "in the window?)",
    ErrorKind.NO_SERIES: "the query matched no series (no data yet for this version, or a "
    "wrong label?)",
    ErrorKind.MANY_SERIES: "the query gave more than one series (aggregate it, e.g. with sum(...))",
    ErrorKind.QUERY_REFUSED: "Prometheus refused the query (try it in Prometheus itself)",
}


class MeasurementError(Exception):
    """A measurement that gave no number: the provider could not be reached, or answered
    something that is not one number. Its message is the kind (with the HTTP status code, or
    the host refused, both ours to show) and a fixed explanation."""

    def __init__(self, kind: ErrorKind, detail: str = "") -> None:
        """`detail`: the HTTP status code of HTTP_STATUS, the host of REFUSED_HOST."""
        self.kind = kind
        self.detail = detail
        label = f"{kind} {detail}" if detail else str(kind)
        super().__init__(f"{label}: {_HINTS[kind]}")


def host_allowed(host: str, port: int, allowed: Sequence[str]) -> bool:
    """Whether analysis may reach `host`:`port`: an entry of `allowed` is a host name (or
    IP address), glob patterns allowed (`*.monitoring.svc`), with `:port` to allow that port
    only. Host names compare case-insensitively."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        pattern, entry_port = split_host_entry(entry)
        if fnmatchcase(host, pattern) and entry_port in (None, port):
            return True
    return False


def split_host_entry(entry: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]` or `[v6]:port` -> (host pattern, port or None);
    ValueError when it is none of those."""
    entry = entry.strip().lower()
    bracketed = entry.startswith("[")  # an IPv6 address, as in a URL
    if bracketed:
        host, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":") if rest.startswith(":") else None
        if rest and port is None:
            raise ValueError(f"{entry!r}: expected [address]:port")
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    else:
        host, port = entry, None
    if not host or any(c in host for c in "/@?# ") or (":" in host and not bracketed):
        raise ValueError(f"{entry!r} is not a host name, with or without :port")
    if port is None:
        return host.rstrip("."), None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{entry!r}: the port is not a number from 1 to 65535")
    return host.rstrip("."), int(port)


def _second(at: datetime) -> datetime:
    """Times are kept to the second (as status writes them), so a run read back from status
    decides exactly as the one in memory did."""
    return at.replace(microsecond=0)


def evaluate(value: float, threshold: ThresholdRange) -> MeasurementPhase:
    """Successful when `value` is in the range (bounds included), else Failed. NaN and the
    infinities are no measurement at all: Error."""
    if not math.isfinite(value):
        return MeasurementPhase.ERROR
    return MeasurementPhase.SUCCESSFUL if threshold.contains(value) else MeasurementPhase.FAILED


def _range_text(threshold: ThresholdRange) -> str:
    low = "" if threshold.min is None else f"{threshold.min:g}"
    high = "" if threshold.max is None else f"{threshold.max:g}"
    return f"[{low}, {high}]"


def measured(metric: AnalysisMetric, value: float, at: datetime) -> Measurement:
    """The record of `metric` giving `value` at `at`."""
    phase = evaluate(value, metric.threshold_range)
    if phase is MeasurementPhase.ERROR:
        return errored(metric.name, MeasurementError(ErrorKind.NOT_FINITE), at)
    message = ""
    if phase is MeasurementPhase.FAILED:
        message = f"{value:g} is outside {_range_text(metric.threshold_range)}"
    return Measurement(
        metric=metric.name, phase=phase, value=value, message=message, at=_second(at)
    )


def errored(metric: str, error: MeasurementError, at: datetime) -> Measurement:
    """The record of a measurement of `metric` that gave no number, and why."""
    return Measurement(
        metric=metric,
        phase=MeasurementPhase.ERROR,
        value=None,
        message=str(error),
        error=error.kind,
        at=_second(at),
    )


def start(step: AnalysisStep, now: datetime) -> AnalysisRun:
    """A new analysis: no measurement yet, every metric due at once."""
    return AnalysisRun(
        started_at=_second(now),
        metric_results=[MetricResult(name=metric.name) for metric in step.metrics],
    )


def _result(run: AnalysisRun, name: str) -> MetricResult:
    return run.result(name) or MetricResult(name=name)


def metric_phase(step: AnalysisStep, result: MetricResult) -> AnalysisPhase:
    """One metric's verdict from its counters (Argo Rollouts' order: failures, then errors,
    then the count). A host the operator refuses is an error at once: asking again cannot
    help."""
    if result.last is not None and result.last.error is ErrorKind.REFUSED_HOST:
        return AnalysisPhase.ERROR
    if result.failed > step.failure_limit:
        return AnalysisPhase.FAILED
    if result.consecutive_errors > step.consecutive_error_limit:
        return AnalysisPhase.ERROR
    if result.count >= step.count:
        return AnalysisPhase.SUCCESSFUL
    return AnalysisPhase.RUNNING


_WORSE = [
    AnalysisPhase.SUCCESSFUL,
    AnalysisPhase.RUNNING,
    AnalysisPhase.ERROR,
    AnalysisPhase.FAILED,
]


def assess(step: AnalysisStep, run: AnalysisRun) -> tuple[AnalysisPhase, str]:
    """The analysis' verdict and why. A run already decided stays decided (an edit of the step
    does not reopen it); results of metrics the step no longer has are ignored."""
    if run.phase.completed:
        return run.phase, run.message
    phases = {m.name: metric_phase(step, _result(run, m.name)) for m in step.metrics}
    worst = max(phases.values(), key=_WORSE.index)
    if worst is AnalysisPhase.RUNNING:
        waiting = [name for name, phase in phases.items() if phase is AnalysisPhase.RUNNING]
        return worst, f"measuring {', '.join(waiting)}"
    if worst is AnalysisPhase.SUCCESSFUL:
        passed = ", ".join(
            f"{m.name}: {_result(run, m.name).successful} of {_result(run, m.name).count}"
            for m in step.metrics
        )
        return worst, f"every metric passed ({passed} measurements in range)"
    name = next(name for name, phase in phases.items() if phase is worst)
    result = _result(run, name)
    last = result.last
    why = f": {last.message}" if last is not None and last.message else ""
    if worst is AnalysisPhase.FAILED:
        return worst, (
            f"{name} failed {result.failed} of {result.count} measurements, more than "
            f"failureLimit {step.failure_limit}{why}"
        )
    if last is not None and last.error is ErrorKind.REFUSED_HOST:
        return worst, f"{name} was refused: {last.message}"
    return worst, (
        f"{name} gave no number {result.consecutive_errors} times in a row, more than "
        f"consecutiveErrorLimit {step.consecutive_error_limit}{why}"
    )


def record(step: AnalysisStep, run: AnalysisRun, measurement: Measurement) -> AnalysisRun:
    """`run` with `measurement` added to its metric's counters, and decided again. A
    measurement of a decided run, or of a metric the step does not have, is refused."""
    if step.metric(measurement.metric) is None:
        raise ValueError(f"the step has no metric {measurement.metric!r}")
    if run.phase.completed:
        raise ValueError(f"the analysis is over ({run.phase}): nothing more is measured")
    result = _result(run, measurement.metric).model_copy(deep=True)
    if metric_phase(step, result).completed:
        raise ValueError(f"{measurement.metric} is done ({metric_phase(step, result)})")
    if measurement.phase is MeasurementPhase.ERROR:
        result.errors += 1
        result.consecutive_errors += 1
    else:
        result.count += 1
        result.consecutive_errors = 0
        if measurement.phase is MeasurementPhase.SUCCESSFUL:
            result.successful += 1
        else:
            result.failed += 1
    result.measurements = [*result.measurements, measurement][-MEASUREMENTS_KEPT:]
    result.phase = metric_phase(step, result)
    results = [r for r in run.metric_results if r.name != result.name]
    order = {m.name: i for i, m in enumerate(step.metrics)}
    results = sorted([*results, result], key=lambda r: order.get(r.name, len(order)))
    updated = run.model_copy(update={"metric_results": results})
    phase, message = assess(step, updated)
    return updated.model_copy(
        update={"phase": phase, "message": message if phase.completed else ""}
    )


def next_measurement(step: AnalysisStep, run: AnalysisRun, metric: str) -> datetime | None:
    """When `metric` is to be measured next: the run's start for its first measurement, its
    last one's time + `interval` after that; None when it or the analysis is done."""
    if run.phase.completed:
        return None
    result = _result(run, metric)
    if metric_phase(step, result).completed:
        return None
    last = result.last
    if last is None:
        return run.started_at
    return last.at + timedelta(seconds=step.interval)


def due(step: AnalysisStep, run: AnalysisRun, now: datetime) -> list[AnalysisMetric]:
    """The metrics to measure now, in the step's order."""
    if assess(step, run)[0].completed:
        return []
    return [
        metric
        for metric in step.metrics
        if (at := next_measurement(step, run, metric.name)) is not None and at <= now
    ]


def next_due(step: AnalysisStep, run: AnalysisRun) -> datetime | None:
    """When the next measurement of any metric is due (the time to come back); None when
    the analysis is decided."""
    if assess(step, run)[0].completed:
        return None
    times = [next_measurement(step, run, metric.name) for metric in step.metrics]
    return min((at for at in times if at is not None), default=None)


async def take(
    provider: MetricProvider, metric: AnalysisMetric, context: TemplateContext, clock: Clock
) -> Measurement:
    """Measure `metric` once: the record of its number, or of its error. Never raises
    MeasurementError."""
    try:
        value = await provider.measure(metric, context)
    except MeasurementError as error:
        return errored(metric.name, error, clock.now())
    return measured(metric, value, clock.now())


async def advance(
    step: AnalysisStep,
    run: AnalysisRun,
    context: TemplateContext,
    provider: MetricProvider,
    clock: Clock,
) -> AnalysisRun:
    """Take the measurements due now (concurrently) and record them: the run to store. Call
    it again at `next_due(step, run)`."""
    metrics = due(step, run, clock.now())
    measurements = await asyncio.gather(*(take(provider, m, context, clock) for m in metrics))
    for measurement in measurements:
        run = record(step, run, measurement)
        if run.phase.completed:  # one metric's verdict ends the analysis: keep no more
            break
    return run


# Reading a number out of what a provider answered.

_JSON_STEP = re.compile(r"\.([A-Za-z0-9_-]+)|\[([0-9]+)\]|\['([^'\[\]]+)'\]|\[\"([^\"\[\]]+)\"\]")


def parse_json_path(path: str) -> list[str | int]:
    """`$.a['b c'][0]` -> ["a", "b c", 0]; ValueError when `path` is not of the subset."""
    if not path.startswith("$"):
        raise ValueError(f"{path!r} does not start with $")
    steps: list[str | int] = []
    at = 1
    while at < len(path):
        match = _JSON_STEP.match(path, at)
        if match is None:
            raise ValueError(f"{path!r}: no step of .key, ['key'] or [index] at {path[at:]!r}")
        key, index, single, double = match.groups()
        steps.append(int(index) if index is not None else key or single or double)
        at = match.end()
    return steps


def value_at(document: Any, path: str) -> float:
    """The number at `path` in a parsed JSON document; MeasurementError when there is none
    there, or it is not a number (a string that looks like one is not; nor is a boolean)."""
    node = document
    for step in parse_json_path(path):
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                raise MeasurementError(ErrorKind.NO_NUMBER)
        elif not isinstance(node, dict) or step not in node:
            raise MeasurementError(ErrorKind.NO_NUMBER)
        node = node[step]
    return _finite(node)


def _finite(node: Any) -> float:
    """A JSON number that is finite; a string, a boolean or null is no number."""
    if isinstance(node, bool) or not isinstance(node, int | float):
        raise MeasurementError(ErrorKind.NO_NUMBER)
    value = float(node)
    if not math.isfinite(value):
        raise MeasurementError(ErrorKind.NOT_FINITE)
    return value


def _sample_value(sample: Any) -> float:
    """A Prometheus [timestamp, "value"] pair's value; NaN and infinities are errors."""
    if not (isinstance(sample, list) and len(sample) == 2 and isinstance(sample[1], str)):
        raise MeasurementError(ErrorKind.NO_NUMBER)
    try:
        value = float(sample[1])
    except ValueError:
        raise MeasurementError(ErrorKind.NO_NUMBER) from None
    return _finite(value)


def prometheus_value(body: Any) -> float:
    """The one number in the JSON body of a successful `/api/v1/query` answer: a scalar, or a
    vector of exactly one series. Anything else is a MeasurementError of its kind."""
    if not isinstance(body, dict) or body.get("status") != "success":
        if isinstance(body, dict) and body.get("error"):
            raise MeasurementError(ErrorKind.QUERY_REFUSED)
        raise MeasurementError(ErrorKind.NO_NUMBER)
    data = body.get("data")
    if not isinstance(data, dict):
        raise MeasurementError(ErrorKind.NO_NUMBER)
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return _sample_value(result)
    if kind == "vector" and isinstance(result, list):
        if not result:
            raise MeasurementError(ErrorKind.NO_SERIES)
        if len(result) > 1:
            raise MeasurementError(ErrorKind.MANY_SERIES)
        series = result[0]
        if not isinstance(series, dict) or "value" not in series:
            raise MeasurementError(ErrorKind.NO_NUMBER)  # a native histogram has none
        return _sample_value(series["value"])
    # A matrix (a range selector like [5m] without rate()), a string: no one number.
    raise MeasurementError(ErrorKind.NO_NUMBER)
