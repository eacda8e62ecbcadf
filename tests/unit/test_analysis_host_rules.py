"""Where analysis may send requests (ALIASOP_ANALYSIS_ALLOWED_HOSTS), and that what providers
answer shows only as a number or a fixed error kind. The provider runs on httpx's
MockTransport, which records each request that would have left."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from aliasop.analysis import (
    MeasurementError,
    advance,
    host_allowed,
    next_due,
    split_host_entry,
    start,
)
from aliasop.analysis_models import AnalysisMetric, AnalysisPhase, AnalysisStep, ErrorKind
from aliasop.analysis_providers import HttpMetricProvider
from aliasop.settings import Settings
from aliasop.templating import TemplateContext

pytestmark = pytest.mark.timeout(10)

CONTEXT = TemplateContext(
    version="4", model="bikes", namespace="ml", name="bikes", variant="canary"
)
SECRET = "db-password=hunter2 at internal-admin"  # what a provider must not get into status


@pytest.mark.parametrize(
    ("host", "port", "allowed"),
    [
        ("prometheus.monitoring", 9090, True),  # listed with its port
        ("prometheus.monitoring", 9091, False),  # ... that port only
        ("scores.ml.svc", 80, True),  # listed without a port: any
        ("scores.ml.svc", 8443, True),
        ("SCORES.ml.svc.", 80, True),  # DNS names compare case-insensitively
        ("a.metrics.example", 443, True),  # a glob
        ("metrics.example", 443, False),  # `*.` needs a label before it
        ("metrics.example.evil", 443, False),
        ("10.0.0.7", 80, False),
        ("169.254.169.254", 80, False),  # the cloud metadata service, say
        ("::1", 9090, True),
        ("::1", 80, False),
    ],
)
def test_only_listed_hosts_are_allowed(host: str, port: int, allowed: bool) -> None:
    hosts = ["prometheus.monitoring:9090", "scores.ml.svc", "*.metrics.example", "[::1]:9090"]
    assert host_allowed(host, port, hosts) is allowed


def test_nothing_is_allowed_by_default() -> None:
    assert Settings().analysis_allowed_hosts == []
    assert not host_allowed("prometheus.monitoring", 9090, [])


@pytest.mark.parametrize(
    ("entry", "parsed"),
    [
        ("prometheus:9090", ("prometheus", 9090)),
        ("Prometheus.Monitoring.", ("prometheus.monitoring", None)),
        ("[fd00::1]:80", ("fd00::1", 80)),
        ("[fd00::1]", ("fd00::1", None)),
        ("*.svc", ("*.svc", None)),
    ],
)
def test_host_entries(entry: str, parsed: tuple[str, int | None]) -> None:
    assert split_host_entry(entry) == parsed


@pytest.mark.parametrize(
    "entry", ["http://prometheus:9090", "prometheus:x", "prometheus:0", "a/b", "", "u@h", "h:1:2"]
)
def test_entries_that_are_no_host_are_refused_at_start(entry: str) -> None:
    with pytest.raises(ValidationError):
        Settings(analysis_allowed_hosts=[entry])


def test_the_setting_is_read_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIASOP_ANALYSIS_ALLOWED_HOSTS", '["prometheus.monitoring:9090"]')
    monkeypatch.setenv("ALIASOP_REGISTRY_WRITE_GRANTS", '{"fraud": ["fraud-*"]}')
    settings = Settings()
    assert settings.analysis_allowed_hosts == ["prometheus.monitoring:9090"]
    assert settings.registry_write_grants == {"fraud": ["fraud-*"]}


class Provider:
    """HttpMetricProvider on a MockTransport answering `answer`; `sent` the requests."""

    def __init__(self, answer: httpx.Response | Exception, allowed: list[str]) -> None:
        self.sent: list[httpx.Request] = []

        def handle(request: httpx.Request) -> httpx.Response:
            self.sent.append(request)
            if isinstance(answer, Exception):
                raise answer
            return answer

        self.http = HttpMetricProvider(
            allowed, max_answer_bytes=1000, transport=httpx.MockTransport(handle)
        )

    async def measure(self, metric: AnalysisMetric) -> float:
        try:
            return await self.http.measure(metric, CONTEXT)
        finally:
            await self.http.aclose()


def web(url: str = "http://scores.ml.svc/v/{{version}}") -> AnalysisMetric:
    return AnalysisMetric.model_validate(
        {"name": "score", "web": {"url": url, "jsonPath": "$.auc"}, "thresholdRange": {"min": 0.8}}
    )


def prometheus(address: str = "http://prometheus.monitoring:9090") -> AnalysisMetric:
    return AnalysisMetric.model_validate(
        {
            "name": "errors",
            "prometheus": {"address": address, "query": "sum(x)"},
            "thresholdRange": {"max": 0.1},
        }
    )


ALLOWED = ["scores.ml.svc", "prometheus.monitoring:9090"]


@pytest.mark.parametrize(
    ("metric", "host"),
    [
        (web("http://169.254.169.254/latest/meta-data"), "169.254.169.254:80"),
        (web("https://scores.ml.svc.evil.example/"), "scores.ml.svc.evil.example:443"),
        (web("http://scores.ml.svc@evil.example/"), "evil.example:80"),  # user info, not host
        (prometheus("http://prometheus.monitoring:9091"), "prometheus.monitoring:9091"),
        (prometheus("http://kubernetes.default.svc"), "kubernetes.default.svc:80"),
    ],
)
async def test_an_unlisted_host_is_refused_without_a_request(
    metric: AnalysisMetric, host: str
) -> None:
    provider = Provider(httpx.Response(200, json={"auc": 0.9}), ALLOWED)
    with pytest.raises(MeasurementError) as refused:
        await provider.measure(metric)
    assert provider.sent == []
    assert refused.value.kind is ErrorKind.REFUSED_HOST
    assert str(refused.value) == (
        f"refused-host {host}: not among the operator's analysis hosts "
        "(ALIASOP_ANALYSIS_ALLOWED_HOSTS); no request was sent"
    )


async def test_a_listed_host_is_measured() -> None:
    provider = Provider(httpx.Response(200, json={"auc": 0.93}), ALLOWED)
    assert await provider.measure(web()) == 0.93
    assert [str(r.url) for r in provider.sent] == ["http://scores.ml.svc/v/4"]
    vector = {"status": "success", "data": {"resultType": "vector", "result": []}}
    vector["data"]["result"] = [{"metric": {}, "value": [1.7e9, "0.02"]}]  # type: ignore[index]
    provider = Provider(httpx.Response(200, json=vector), ALLOWED)
    assert await provider.measure(prometheus()) == 0.02


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("metric", "answer", "kind", "shown"),
    [
        (web(), httpx.Response(503, text=SECRET), ErrorKind.HTTP_STATUS, "http-status 503"),
        (web(), httpx.Response(200, text=f"<html>{SECRET}</html>"), ErrorKind.NOT_JSON, ""),
        (web(), httpx.Response(200, content=body({"auc": SECRET})), ErrorKind.NO_NUMBER, ""),
        (web(), httpx.Response(200, content=body({SECRET: 1})), ErrorKind.NO_NUMBER, ""),
        (web(), httpx.Response(200, content=b"[" + b"1," * 600 + b"1]"), ErrorKind.TOO_LARGE, ""),
        (web(), httpx.ConnectError(SECRET), ErrorKind.UNREACHABLE, ""),
        (web(), httpx.ReadTimeout(SECRET), ErrorKind.UNREACHABLE, ""),
        (
            prometheus(),
            httpx.Response(400, content=body({"status": "error", "error": SECRET})),
            ErrorKind.QUERY_REFUSED,
            "",
        ),
        (prometheus(), httpx.Response(502, text=SECRET), ErrorKind.NOT_JSON, ""),
        (
            prometheus(),
            httpx.Response(500, content=body({SECRET: 1})),
            ErrorKind.HTTP_STATUS,
            "http-status 500",
        ),
        (
            prometheus(),
            httpx.Response(
                200,
                content=body(
                    {
                        "status": "success",
                        "data": {
                            "resultType": "vector",
                            "result": [
                                {"metric": {"secret": SECRET}, "value": [1, "1"]},
                                {"metric": {"secret": SECRET}, "value": [1, "2"]},
                            ],
                        },
                    }
                ),
            ),
            ErrorKind.MANY_SERIES,
            "",
        ),
        (
            prometheus(),
            httpx.Response(200, content=body({"status": "success", "data": SECRET})),
            ErrorKind.NO_NUMBER,
            "",
        ),
    ],
)
async def test_what_a_provider_answers_shows_only_as_a_kind(
    metric: AnalysisMetric,
    answer: httpx.Response | Exception,
    kind: ErrorKind,
    shown: str,
) -> None:
    with pytest.raises(MeasurementError) as error:
        await Provider(answer, ALLOWED).measure(metric)
    assert error.value.kind is kind
    assert str(error.value).startswith(f"{shown or kind}: ")
    for part in ("hunter2", "db-password", "internal-admin", "<html>", "$.auc"):
        assert part not in str(error.value)


async def test_a_refused_host_ends_the_analysis_at_once_as_an_error() -> None:
    step = AnalysisStep.model_validate(
        {"interval": 10, "count": 3, "metrics": [web("http://elsewhere.example/").model_dump()]}
    )
    provider = Provider(httpx.Response(200, json={"auc": 0.9}), ALLOWED)

    class Clock:
        def now(self) -> datetime:
            return datetime(2026, 1, 1, tzinfo=UTC)

    run = await advance(step, start(step, Clock().now()), CONTEXT, provider.http, Clock())
    await provider.http.aclose()
    assert provider.sent == []
    assert run.phase is AnalysisPhase.ERROR and next_due(step, run) is None
    assert run.message == (
        "score was refused: refused-host elsewhere.example:80: not among the operator's "
        "analysis hosts (ALIASOP_ANALYSIS_ALLOWED_HOSTS); no request was sent"
    )
    result = run.result("score")
    assert result is not None and result.last is not None
    assert result.last.error is ErrorKind.REFUSED_HOST
    assert run.to_status()["metricResults"][0]["measurements"][0]["error"] == "refused-host"
