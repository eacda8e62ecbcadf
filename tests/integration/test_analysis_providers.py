"""The analysis providers against real servers (metric_sources): a Prometheus built from its
Go module scraping series this test serves, and the test's own HTTP server for the web
provider. No Kubernetes cluster and no MLflow: nothing here touches them.

The analysis' own clock is a fake one moved to each due time (the decision is a function of
the records and the clock); what Prometheus holds changes for real, and the tests wait for
its scrapes to show it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from aliasop.analysis import MeasurementError, advance, next_due, start
from aliasop.analysis_models import (
    AnalysisMetric,
    AnalysisPhase,
    AnalysisRun,
    AnalysisStep,
    ErrorKind,
    MeasurementPhase,
)
from aliasop.analysis_providers import HttpMetricProvider
from aliasop.templating import TemplateContext
from aliasop_dev import local

from metric_sources import Answer, TestServer, expose

pytestmark = pytest.mark.timeout(120)

CONTEXT = TemplateContext(
    version="4", model="bikes", namespace="ml", name="bikes", variant="canary"
)
# A label value that would end a string it is pasted into unescaped, or break the exposition.
HOSTILE = "we\"ird'\\ mod\u00e8le} or vector(1)"


@pytest.fixture
async def provider() -> AsyncIterator[HttpMetricProvider]:
    metric_provider = HttpMetricProvider(["127.0.0.1"], timeout_seconds=2)
    try:
        yield metric_provider
    finally:
        await metric_provider.aclose()


def prometheus_metric(address: str, query: str, **threshold: float) -> AnalysisMetric:
    return AnalysisMetric.model_validate(
        {
            "name": "error-rate",
            "prometheus": {"address": address, "query": query},
            "thresholdRange": threshold or {"max": 0.05},
        }
    )


def web_metric(url: str, json_path: str = "$.score", **extra: Any) -> AnalysisMetric:
    return AnalysisMetric.model_validate(
        {
            "name": "offline-score",
            "web": {"url": url, "jsonPath": json_path, **extra},
            "thresholdRange": {"min": 0.8},
        }
    )


@pytest.fixture(scope="module")
def error_ratios(server: TestServer, prometheus: str) -> str:
    """Two versions' error ratios in Prometheus: the metric's name."""
    for version, ratio in (("3", 0.5), ("4", 0.02)):
        labels = {"model": "bikes", "version": version, "variant": "canary", "test": "ratios"}
        expose(server, prometheus, "aliasop_test_error_ratio", labels, ratio)
    return "aliasop_test_error_ratio"


async def test_prometheus_measures_the_series_its_placeholders_select(
    prometheus: str, error_ratios: str, provider: HttpMetricProvider
) -> None:
    query = (
        f'sum({error_ratios}{{model="{{{{model}}}}",version="{{{{version}}}}",'
        f'variant="{{{{ variant }}}}"}})'
    )
    metric = prometheus_metric(prometheus, query)
    assert await provider.measure(metric, CONTEXT) == 0.02
    v3 = TemplateContext(version="3", model="bikes", namespace="ml", name="b", variant="canary")
    assert await provider.measure(metric, v3) == 0.5
    # A scalar is a number too.
    scalar = prometheus_metric(prometheus, f'scalar(sum({error_ratios}{{version="4"}}))')
    assert await provider.measure(scalar, CONTEXT) == 0.02
    assert await provider.measure(prometheus_metric(prometheus, "0.25"), CONTEXT) == 0.25


async def test_prometheus_reads_a_value_that_would_break_out_of_its_string(
    server: TestServer, prometheus: str, provider: HttpMetricProvider
) -> None:
    expose(server, prometheus, "aliasop_test_hostile", {"model": HOSTILE}, 7.0)
    context = TemplateContext(version="4", model=HOSTILE, namespace="ml", name="b", variant="c")
    for quoted in ('"{{model}}"', "'{{model}}'"):
        metric = prometheus_metric(prometheus, f"sum(aliasop_test_hostile{{model={quoted}}})")
        assert await provider.measure(metric, context) == 7.0


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ("aliasop_test_never_exposed", ErrorKind.NO_SERIES),
        ('aliasop_test_error_ratio{test="ratios"}', ErrorKind.MANY_SERIES),
        ("0/0", ErrorKind.NOT_FINITE),
        ('sum(aliasop_test_error_ratio{version="4"}) / 0', ErrorKind.NOT_FINITE),
        ("sum(", ErrorKind.QUERY_REFUSED),
        ('aliasop_test_error_ratio{version="4"}[1m]', ErrorKind.NO_NUMBER),
    ],
)
async def test_prometheus_answers_that_are_no_number_are_errors(
    prometheus: str, error_ratios: str, provider: HttpMetricProvider, query: str, kind: ErrorKind
) -> None:
    with pytest.raises(MeasurementError) as error:
        await provider.measure(prometheus_metric(prometheus, query), CONTEXT)
    assert error.value.kind is kind


async def test_a_prometheus_that_is_not_there_or_not_prometheus_is_an_error(
    server: TestServer, provider: HttpMetricProvider
) -> None:
    nobody = f"http://127.0.0.1:{local.free_port()}"
    with pytest.raises(MeasurementError, match=r"^unreachable: "):
        await provider.measure(prometheus_metric(nobody, "up"), CONTEXT)
    server.answers["/html/api/v1/query"] = Answer(b"<html>hi</html>", content_type="text/html")
    with pytest.raises(MeasurementError, match=r"^not-json: the answer is not JSON$"):
        await provider.measure(prometheus_metric(f"{server.url}/html", "up"), CONTEXT)
    server.answers["/broken/api/v1/query"] = Answer(b'{"oops": 1}', status=500)
    with pytest.raises(MeasurementError, match=r"^http-status 500: "):
        await provider.measure(prometheus_metric(f"{server.url}/broken/", "up"), CONTEXT)
    server.answers["/slow/api/v1/query"] = Answer(b"{}", delay=30)
    with pytest.raises(MeasurementError, match=r"^timeout: "):
        await provider.measure(prometheus_metric(f"{server.url}/slow", "up"), CONTEXT)


async def test_web_reads_the_number_at_its_path_with_placeholders_url_encoded(
    server: TestServer, provider: HttpMetricProvider
) -> None:
    url = server.answer_json("/score", {"data": {"scores": [{"auc": 0.93}]}})
    metric = web_metric(
        url + "?model={{model}}&version={{version}}",
        "$.data.scores[0].auc",
        headers={"X-Scope-OrgID": "team-a"},
    )
    context = TemplateContext(version="4", model="a b&c=d", namespace="ml", name="b", variant="c")
    assert await provider.measure(metric, context) == 0.93
    path, query, headers = server.requests[-1]
    assert (path, query) == ("/score", {"model": "a b&c=d", "version": "4"})
    assert headers["X-Scope-OrgID"] == "team-a"


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        (Answer(b"<html>ok</html>", content_type="text/html"), "not-json"),
        (Answer(b'{"other": 1}'), "no-number"),
        (Answer(b'{"score": "0.9"}'), "no-number"),
        (Answer(b'{"score": true}'), "no-number"),
        (Answer(b'{"score": null}'), "no-number"),
        (Answer(b"down for maintenance", status=503), "http-status 503"),
        (Answer(b"", status=302, headers={"Location": "/elsewhere"}), "http-status 302"),
        (Answer(b'{"score": ' + b" " * (1 << 20) + b"1}"), "too-large"),
        (Answer(b'{"score": 1}', delay=30), "timeout"),
    ],
)
async def test_web_answers_that_are_no_number_are_errors_of_a_fixed_kind(
    server: TestServer, provider: HttpMetricProvider, answer: Answer, shown: str
) -> None:
    """Only the kind (and a status code) is shown: nothing of the body."""
    server.answers["/odd"] = answer
    with pytest.raises(MeasurementError) as error:
        await provider.measure(web_metric(f"{server.url}/odd"), CONTEXT)
    assert str(error.value).startswith(f"{shown}: ")
    for part in ("maintenance", "<html>", "score", "elsewhere"):
        assert part not in str(error.value)


async def test_a_web_endpoint_that_is_not_there_is_an_error(provider: HttpMetricProvider) -> None:
    url = f"http://127.0.0.1:{local.free_port()}/score"
    with pytest.raises(MeasurementError, match=r"^unreachable: no connection to the provider$"):
        await provider.measure(web_metric(url), CONTEXT)


@dataclass
class Clock:
    at: datetime

    def now(self) -> datetime:
        return self.at


def issue_step(prometheus: str, scorer: str, **limits: int) -> AnalysisStep:
    """The issue's example analysis, pointed at the test's servers."""
    return AnalysisStep.model_validate(
        {
            "interval": 10,
            "count": 3,
            "failureLimit": 1,
            **limits,
            "metrics": [
                {
                    "name": "error-rate",
                    "prometheus": {
                        "address": prometheus,
                        "query": 'sum(aliasop_test_canary_errors{version="{{version}}"})',
                    },
                    "thresholdRange": {"max": 0.05},
                },
                {
                    "name": "offline-score",
                    "web": {
                        "url": scorer + "?model={{model}}&version={{version}}",
                        "jsonPath": "$.score",
                    },
                    "thresholdRange": {"min": 0.8},
                },
            ],
        }
    )


async def test_an_analysis_fails_on_real_measurements_across_a_restart(
    server: TestServer, prometheus: str, provider: HttpMetricProvider
) -> None:
    scorer = server.answer_json("/canary-score", {"score": 0.9})
    step = issue_step(prometheus, scorer)
    expose(server, prometheus, "aliasop_test_canary_errors", {"version": "4"}, 0.01)
    clock = Clock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    run = await advance(step, start(step, clock.now()), CONTEXT, provider, clock)
    assert run.phase is AnalysisPhase.RUNNING
    assert [r.successful for r in run.metric_results] == [1, 1]

    # The canary's errors climb; the operator restarts (status read back) between passes.
    expose(server, prometheus, "aliasop_test_canary_errors", {"version": "4"}, 0.09)
    for _ in range(2):
        run = AnalysisRun.model_validate(run.to_status())
        when = next_due(step, run)
        assert when is not None
        clock.at = when
        run = await advance(step, run, CONTEXT, provider, clock)
    assert run.phase is AnalysisPhase.FAILED and run.phase.aborts
    assert run.message.startswith("error-rate failed 2 of 3 measurements, more than failureLimit 1")
    assert "0.09 is outside [, 0.05]" in run.message
    errors = run.result("error-rate")
    assert errors is not None
    assert [m.phase for m in errors.measurements] == [
        MeasurementPhase.SUCCESSFUL,
        MeasurementPhase.FAILED,
        MeasurementPhase.FAILED,
    ]
    assert next_due(step, run) is None


async def test_an_analysis_passes_and_a_provider_gone_quiet_ends_it_as_an_error(
    server: TestServer, prometheus: str, provider: HttpMetricProvider
) -> None:
    scorer = server.answer_json("/good-score", {"score": 0.95})
    expose(server, prometheus, "aliasop_test_canary_errors", {"version": "5"}, 0.0)
    context = TemplateContext(
        version="5", model="bikes", namespace="ml", name="b", variant="canary"
    )
    step = issue_step(prometheus, scorer)
    clock = Clock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    run = start(step, clock.now())
    while (when := next_due(step, run)) is not None:
        clock.at = when
        run = await advance(step, run, context, provider, clock)
    assert run.phase is AnalysisPhase.SUCCESSFUL
    assert run.message == (
        "every metric passed (error-rate: 3 of 3, offline-score: 3 of 3 measurements in range)"
    )

    # The scorer stops answering numbers: errors, not passes, until the limit is exceeded.
    server.answers["/good-score"] = Answer(b"upstream timeout", status=504)
    step = issue_step(prometheus, scorer, consecutiveErrorLimit=2)
    run = start(step, clock.now())
    while (when := next_due(step, run)) is not None:
        clock.at = when
        run = await advance(step, run, context, provider, clock)
    assert run.phase is AnalysisPhase.ERROR and run.phase.aborts
    score = run.result("offline-score")
    assert score is not None and (score.count, score.consecutive_errors) == (0, 3)
    assert run.message.endswith("http-status 504: the provider did not answer with success")
    assert "upstream" not in run.message
