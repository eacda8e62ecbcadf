"""The analysis decision (Argo Rollouts' semantics), one measurement's verdict, and reading a
number out of what providers answer."""

import itertools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aliasop import analysis
from aliasop.analysis import (
    MeasurementError,
    advance,
    assess,
    due,
    errored,
    evaluate,
    measured,
    next_due,
    parse_json_path,
    prometheus_value,
    record,
    start,
    value_at,
)
from aliasop.analysis_models import (
    MEASUREMENTS_KEPT,
    AnalysisMetric,
    AnalysisPhase,
    AnalysisRun,
    AnalysisStep,
    ErrorKind,
    MeasurementPhase,
    ThresholdRange,
)
from aliasop.templating import TemplateContext

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
CONTEXT = TemplateContext(
    version="4", model="bikes", namespace="ml", name="bikes", variant="canary"
)


def make_step(metrics: tuple[str, ...] = ("error-rate",), **limits: int) -> AnalysisStep:
    return AnalysisStep.model_validate(
        {
            "interval": 10,
            "count": 3,
            **limits,
            "metrics": [
                {
                    "name": name,
                    "prometheus": {"address": "http://p:9090", "query": "sum(up)"},
                    "thresholdRange": {"max": 0.05},
                }
                for name in metrics
            ],
        }
    )


@pytest.mark.parametrize(
    ("bounds", "value", "phase"),
    [
        ({"max": 0.05}, 0.05, MeasurementPhase.SUCCESSFUL),  # bounds included
        ({"max": 0.05}, 0.0500001, MeasurementPhase.FAILED),
        ({"max": 0.05}, -3.0, MeasurementPhase.SUCCESSFUL),
        ({"min": 0.8}, 0.8, MeasurementPhase.SUCCESSFUL),
        ({"min": 0.8}, 0.79, MeasurementPhase.FAILED),
        ({"min": 0.8}, 1e300, MeasurementPhase.SUCCESSFUL),
        ({"min": 1, "max": 2}, 1.5, MeasurementPhase.SUCCESSFUL),
        ({"min": 1, "max": 2}, 0.0, MeasurementPhase.FAILED),
        ({"min": 1, "max": 2}, 2.5, MeasurementPhase.FAILED),
        ({"min": 1, "max": 1}, 1.0, MeasurementPhase.SUCCESSFUL),
        ({"min": 0.8}, math.nan, MeasurementPhase.ERROR),
        ({"min": 0.8}, math.inf, MeasurementPhase.ERROR),
        ({"max": 0.05}, -math.inf, MeasurementPhase.ERROR),
    ],
)
def test_one_measurement_against_its_range(
    bounds: dict[str, float], value: float, phase: MeasurementPhase
) -> None:
    threshold = ThresholdRange.model_validate(bounds)
    assert evaluate(value, threshold) is phase
    metric = AnalysisMetric.model_validate(
        {"name": "m", "web": {"url": "http://s", "jsonPath": "$.v"}, "thresholdRange": bounds}
    )
    record_ = measured(metric, value, T0 + timedelta(microseconds=700))
    assert record_.phase is phase
    assert record_.at == T0  # kept to the second, as status keeps it
    if phase is MeasurementPhase.FAILED:
        assert "is outside [" in record_.message
    if phase is MeasurementPhase.ERROR:
        assert record_.value is None and record_.error is ErrorKind.NOT_FINITE


S, F, E = MeasurementPhase.SUCCESSFUL, MeasurementPhase.FAILED, MeasurementPhase.ERROR


def replay(step: AnalysisStep, phases: list[MeasurementPhase], metric: str = "error-rate") -> Any:
    run = start(step, T0)
    for i, phase in enumerate(phases):
        at = T0 + timedelta(seconds=10 * i)
        if phase is E:
            measurement = errored(metric, MeasurementError(ErrorKind.UNREACHABLE), at)
        else:
            value = 0.01 if phase is S else 0.09
            measurement = measured(step.metrics[0], value, at)
        run = record(step, run, measurement)
    return run


# (limits, measurements in order, the verdict): count 3 throughout.
DECISIONS = [
    ({}, [], AnalysisPhase.RUNNING),
    ({}, [S, S], AnalysisPhase.RUNNING),
    ({}, [S, S, S], AnalysisPhase.SUCCESSFUL),
    ({}, [F], AnalysisPhase.FAILED),  # failureLimit 0: the first failure fails it
    ({"failureLimit": 1}, [F, S, S], AnalysisPhase.SUCCESSFUL),
    ({"failureLimit": 1}, [F, F], AnalysisPhase.FAILED),
    ({"failureLimit": 1}, [S, F, S], AnalysisPhase.SUCCESSFUL),
    ({"failureLimit": 2}, [F, F, F], AnalysisPhase.FAILED),
    ({"failureLimit": 3}, [F, F, F], AnalysisPhase.SUCCESSFUL),  # Argo: within the limit
    # Errors are not measurements: they neither count nor fail...
    ({}, [E, S, E, S, E, S], AnalysisPhase.SUCCESSFUL),
    ({}, [E, E, E, E], AnalysisPhase.RUNNING),  # 4 in a row: the default limit, not more
    ({}, [E, E, E, E, E], AnalysisPhase.ERROR),
    ({}, [E, E, E, E, S, E, E, E, E, S], AnalysisPhase.RUNNING),  # a number resets the streak
    ({"consecutiveErrorLimit": 0}, [E], AnalysisPhase.ERROR),
    ({"consecutiveErrorLimit": 1}, [S, E, S, E, S], AnalysisPhase.SUCCESSFUL),
    ({"consecutiveErrorLimit": 1}, [S, E, E], AnalysisPhase.ERROR),
]


@pytest.mark.parametrize(("limits", "phases", "verdict"), DECISIONS)
def test_the_decision(
    limits: dict[str, int], phases: list[MeasurementPhase], verdict: AnalysisPhase
) -> None:
    step = make_step(**limits)
    run = replay(step, phases)
    assert assess(step, run)[0] is verdict
    assert run.phase is verdict
    assert verdict.completed == (next_due(step, run) is None)
    assert (verdict in (AnalysisPhase.FAILED, AnalysisPhase.ERROR)) == verdict.aborts


def test_the_messages_say_why() -> None:
    step = make_step(failureLimit=1)
    failed = replay(step, [F, S, F])
    assert failed.message == (
        "error-rate failed 2 of 3 measurements, more than failureLimit 1: 0.09 is outside [, 0.05]"
    )
    errors = replay(make_step(), [E] * 5)
    assert errors.message == (
        "error-rate gave no number 5 times in a row, more than consecutiveErrorLimit 4: "
        "unreachable: no connection to the provider"
    )
    passed = replay(step, [S, F, S])  # a failure counts toward `count`
    assert passed.phase is AnalysisPhase.SUCCESSFUL
    assert passed.message == "every metric passed (error-rate: 2 of 3 measurements in range)"
    assert replay(step, [S]).message == ""
    assert assess(step, replay(step, [S]))[1] == "measuring error-rate"


def test_measurements_are_due_at_start_then_an_interval_after_the_last() -> None:
    step = make_step(("a", "b"))
    run = start(step, T0)
    assert [m.name for m in due(step, run, T0)] == ["a", "b"]
    assert next_due(step, run) == T0
    # a measured at T0+2 (the provider was slow), b errored at T0+1.
    run = record(step, run, measured(step.metrics[0], 0.0, T0 + timedelta(seconds=2)))
    run = record(
        step, run, errored("b", MeasurementError(ErrorKind.TIMEOUT), T0 + timedelta(seconds=1))
    )
    assert due(step, run, T0 + timedelta(seconds=10)) == []
    assert next_due(step, run) == T0 + timedelta(seconds=11)
    assert [m.name for m in due(step, run, T0 + timedelta(seconds=11))] == ["b"]
    assert [m.name for m in due(step, run, T0 + timedelta(seconds=12))] == ["a", "b"]


def test_a_finished_metric_is_not_measured_while_another_goes_on() -> None:
    step = make_step(("a", "b"))
    run = start(step, T0)
    for i in range(3):
        run = record(step, run, measured(step.metrics[0], 0.0, T0 + timedelta(seconds=10 * i)))
    assert run.result("a") is not None and run.result("a").phase is AnalysisPhase.SUCCESSFUL  # type: ignore[union-attr]
    assert run.phase is AnalysisPhase.RUNNING
    assert [m.name for m in due(step, run, T0 + timedelta(hours=1))] == ["b"]
    with pytest.raises(ValueError, match="a is done"):
        record(step, run, measured(step.metrics[0], 0.0, T0 + timedelta(hours=1)))


def test_one_failing_metric_ends_the_analysis_for_all() -> None:
    step = make_step(("a", "b"))
    run = record(step, start(step, T0), measured(step.metrics[1], 1.0, T0))
    assert run.phase is AnalysisPhase.FAILED
    assert due(step, run, T0 + timedelta(hours=1)) == [] and next_due(step, run) is None
    with pytest.raises(ValueError, match="the analysis is over"):
        record(step, run, measured(step.metrics[0], 0.0, T0))


def test_failed_is_worse_than_error() -> None:
    step = make_step(("a", "b"), consecutiveErrorLimit=0)
    run = start(step, T0)
    run = run.model_copy(
        update={
            "metric_results": [
                r.model_copy(update={"consecutive_errors": 1})
                if r.name == "a"
                else r.model_copy(update={"failed": 1, "count": 1})
                for r in run.metric_results
            ]
        }
    )
    assert assess(step, run)[0] is AnalysisPhase.FAILED


def test_a_decided_run_stays_decided_when_the_step_is_edited() -> None:
    run = replay(make_step(), [F])
    assert assess(make_step(failureLimit=5), run)[0] is AnalysisPhase.FAILED


def test_a_metric_added_to_the_step_starts_from_nothing_and_a_removed_one_is_ignored() -> None:
    run = replay(make_step(("error-rate",)), [S])
    edited = make_step(("latency",))
    assert [m.name for m in due(edited, run, T0)] == ["latency"]
    run = record(edited, run, measured(edited.metrics[0], 0.0, T0))
    assert [r.name for r in run.metric_results] == ["latency", "error-rate"]
    with pytest.raises(ValueError, match="no metric 'error-rate'"):
        record(edited, run, errored("error-rate", MeasurementError(ErrorKind.NOT_JSON), T0))


def test_status_keeps_the_newest_measurements_and_every_count() -> None:
    step = make_step(count=100, consecutiveErrorLimit=100)
    run = replay(step, [S, E] * 20)
    result = run.result("error-rate")
    assert result is not None
    assert (result.count, result.successful, result.errors) == (20, 20, 20)
    assert len(result.measurements) == MEASUREMENTS_KEPT
    assert result.measurements[-1].phase is E


# A fake clock and provider, for `advance`.


@dataclass
class Clock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at


@dataclass
class ScriptedProvider:
    """Answers each metric from its script: a number, or an error (a str). Counts calls."""

    scripts: dict[str, list[float | str]]
    calls: list[str] = field(default_factory=list)

    async def measure(self, metric: AnalysisMetric, context: TemplateContext) -> float:
        assert context == CONTEXT
        self.calls.append(metric.name)
        answer = self.scripts[metric.name].pop(0)
        if isinstance(answer, str):
            raise MeasurementError(ErrorKind(answer))
        return answer


async def test_advance_measures_what_is_due_and_records_it() -> None:
    step = make_step(("a", "b"), failureLimit=1)
    clock = Clock()
    provider = ScriptedProvider({"a": [0.0, 0.5, 0.0, 0.0], "b": ["unreachable", 0.0, 0.0, 0.0]})
    run = start(step, clock.now())
    run = await advance(step, run, CONTEXT, provider, clock)
    assert provider.calls == ["a", "b"]
    b = run.result("b")
    assert b is not None and b.consecutive_errors == 1 and b.last is not None
    assert b.last.error is ErrorKind.UNREACHABLE
    # Nothing is due before the interval: no call.
    clock.at = T0 + timedelta(seconds=9)
    assert await advance(step, run, CONTEXT, provider, clock) == run
    assert provider.calls == ["a", "b"]
    while (when := next_due(step, run)) is not None:
        clock.at = when
        run = await advance(step, run, CONTEXT, provider, clock)
    assert run.phase is AnalysisPhase.SUCCESSFUL
    assert provider.calls == ["a", "b", "a", "b", "a", "b", "b"]


def test_the_pure_module_names_what_the_lead_wires() -> None:
    for name in ("start", "due", "next_due", "record", "assess", "advance", "take"):
        assert callable(getattr(analysis, name))


# Property: the decision is a function of what status keeps. A run written to status and read
# back at any point (an operator restart) goes on to the same verdict with the same
# measurements as one that never stopped, and never measures more than it must.

outcomes = st.lists(st.sampled_from([S, F, E]), min_size=0, max_size=40)


async def simulate(
    step: AnalysisStep, script: list[MeasurementPhase], restart_after: int | None
) -> tuple[AnalysisRun, int]:
    clock = Clock()
    values = {S: 0.01, F: 0.09}
    answers: list[float | str] = [values[p] if p is not E else "unreachable" for p in script]
    answers += [0.01] * 200  # then it passes
    provider = ScriptedProvider({"error-rate": answers})
    run = start(step, clock.now())
    passes = 0
    while True:
        run = await advance(step, run, CONTEXT, provider, clock)
        passes += 1
        if restart_after is not None and passes == restart_after:
            run = AnalysisRun.model_validate(run.to_status())
        when = next_due(step, run)
        if when is None:
            return run, len(provider.calls)
        # The next pass may come late (a busy operator), never early.
        clock.at = max(clock.at, when) + timedelta(seconds=passes % 3)


@settings(max_examples=150, deadline=None)
@given(
    outcomes,
    st.integers(min_value=1, max_value=5),
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=0, max_value=5),
    st.integers(min_value=1, max_value=30),
)
async def test_a_restart_anywhere_changes_nothing(
    script: list[MeasurementPhase], count: int, failure_limit: int, error_limit: int, at: int
) -> None:
    step = make_step(count=count, failureLimit=failure_limit, consecutiveErrorLimit=error_limit)
    straight, calls = await simulate(step, script, None)
    restarted, restarted_calls = await simulate(step, script, at)
    assert restarted == straight and restarted_calls == calls
    assert straight.phase.completed
    result = straight.result("error-rate")
    assert result is not None
    assert result.count <= count and result.failed <= failure_limit + 1
    assert result.consecutive_errors <= error_limit + 1
    # Measurements of a metric are at least an interval apart.
    times = [m.at for m in result.measurements]
    assert all(b - a >= timedelta(seconds=step.interval) for a, b in itertools.pairwise(times))


# Reading numbers.


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("$", []),
        ("$.score", ["score"]),
        ("$.data.scores[0].auc", ["data", "scores", 0, "auc"]),
        ("$['a b'][\"c.d\"].500", ["a b", "c.d", "500"]),
    ],
)
def test_json_paths(path: str, steps: list[str | int]) -> None:
    assert parse_json_path(path) == steps


@pytest.mark.parametrize("path", ["score", "$.", "$[x]", "$..a", "$.a[-1]", "$['a'"])
def test_json_paths_outside_the_subset(path: str) -> None:
    with pytest.raises(ValueError):
        parse_json_path(path)


DOCUMENT = {
    "score": 0.91,
    "count": 3,
    "data": {"scores": [{"auc": 0.8}], "flag": True, "text": "0.9", "none": None},
}


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        ("$.score", 0.91),
        ("$.count", 3.0),
        ("$.data.scores[0].auc", 0.8),
        ("$.missing", ErrorKind.NO_NUMBER),
        ("$.data.scores[1].auc", ErrorKind.NO_NUMBER),
        ("$.score.x", ErrorKind.NO_NUMBER),
        ("$.data[0]", ErrorKind.NO_NUMBER),
        ("$.data.flag", ErrorKind.NO_NUMBER),
        ("$.data.text", ErrorKind.NO_NUMBER),
        ("$.data.none", ErrorKind.NO_NUMBER),
        ("$.data", ErrorKind.NO_NUMBER),
    ],
)
def test_value_at(path: str, answer: float | ErrorKind) -> None:
    if isinstance(answer, ErrorKind):
        with pytest.raises(MeasurementError) as error:
            value_at(DOCUMENT, path)
        assert error.value.kind is answer
    else:
        assert value_at(DOCUMENT, path) == answer


def vector(*values: str) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"pod": f"p{i}"}, "value": [1.7e9, v]} for i, v in enumerate(values)
            ],
        },
    }


@pytest.mark.parametrize(
    ("body", "answer"),
    [
        (vector("0.25"), 0.25),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1.7e9, "3"]}}, 3.0),
        (vector(), ErrorKind.NO_SERIES),
        (vector("1", "2"), ErrorKind.MANY_SERIES),
        (vector("NaN"), ErrorKind.NOT_FINITE),
        (vector("+Inf"), ErrorKind.NOT_FINITE),
        (vector("x"), ErrorKind.NO_NUMBER),
        (
            {"status": "error", "errorType": "bad_data", "error": "parse error at char 5"},
            ErrorKind.QUERY_REFUSED,
        ),
        (
            {"status": "success", "data": {"resultType": "matrix", "result": []}},
            ErrorKind.NO_NUMBER,
        ),
        (
            {"status": "success", "data": {"resultType": "string", "result": [1, "a"]}},
            ErrorKind.NO_NUMBER,
        ),
        ({"status": "success"}, ErrorKind.NO_NUMBER),
        ([1, 2], ErrorKind.NO_NUMBER),
        (
            {"status": "success", "data": {"resultType": "vector", "result": [{"histogram": []}]}},
            ErrorKind.NO_NUMBER,
        ),
        (
            {"status": "success", "data": {"resultType": "scalar", "result": "1"}},
            ErrorKind.NO_NUMBER,
        ),
    ],
)
def test_prometheus_answers(body: Any, answer: float | ErrorKind) -> None:
    if isinstance(answer, ErrorKind):
        with pytest.raises(MeasurementError) as error:
            prometheus_value(body)
        assert error.value.kind is answer
    else:
        assert prometheus_value(body) == answer
