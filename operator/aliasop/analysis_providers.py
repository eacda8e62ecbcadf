"""The analysis providers: a measurement over HTTP, from Prometheus or a JSON web endpoint.

I/O behind `interfaces.MetricProvider`; what an answer means is `aliasop.analysis`
(`prometheus_value`, `value_at`). A request goes only to the hosts the operator lists
(ALIASOP_ANALYSIS_ALLOWED_HOSTS): the URL is a tenant's, the request leaves from the
operator's network position. Every request has a deadline for the whole exchange and a cap
on the answer's size, follows no redirect, and is never retried here: an error is one
measurement's error, which the analysis counts against `consecutiveErrorLimit` and retries at
its interval. What came back is reported only as the number, or as an ErrorKind.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import httpx

from aliasop.analysis import MeasurementError, host_allowed, prometheus_value, value_at
from aliasop.analysis_models import AnalysisMetric, ErrorKind, PrometheusProvider, WebProvider
from aliasop.templating import TemplateContext, render_query, render_url

DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_ANSWER_BYTES = 1 << 20  # a number comes in far less
DEFAULT_CONCURRENCY = 16
_DEFAULT_PORTS = {"http": 80, "https": 443}


class HttpMetricProvider:
    """Measures a metric with its Prometheus query or its web request."""

    def __init__(
        self,
        allowed_hosts: Sequence[str],
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        concurrency: int = DEFAULT_CONCURRENCY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`allowed_hosts`: the hosts requests may go to (analysis.host_allowed); others are
        refused before anything is sent. `concurrency`: requests in flight at once, over
        every resource's analysis; a measurement waiting for its turn is not timed yet."""
        self._allowed_hosts = tuple(allowed_hosts)
        self._slots = asyncio.Semaphore(concurrency)
        self._timeout = timeout_seconds
        self._max_bytes = max_answer_bytes
        self._http = httpx.AsyncClient(
            timeout=timeout_seconds, follow_redirects=False, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def measure(self, metric: AnalysisMetric, context: TemplateContext) -> float:
        if metric.prometheus is not None:
            return await self.prometheus(metric.prometheus, context)
        if metric.web is not None:
            return await self.web(metric.web, context)
        raise ValueError(f"metric {metric.name} has no provider")  # the model forbids it

    async def prometheus(self, provider: PrometheusProvider, context: TemplateContext) -> float:
        """An instant query: GET <address>/api/v1/query?query=..."""
        address = render_url(provider.address, context).rstrip("/")
        query = render_query(provider.query, context)
        status, body = await self._get(f"{address}/api/v1/query", params={"query": query})
        answer = _json(body)
        # Prometheus answers a refused query with 400/422 and a JSON error.
        if status != 200 and not (isinstance(answer, dict) and answer.get("error")):
            raise MeasurementError(ErrorKind.HTTP_STATUS, str(status))
        return prometheus_value(answer)

    async def web(self, provider: WebProvider, context: TemplateContext) -> float:
        """GET the URL; the number at jsonPath in its JSON answer."""
        url = render_url(provider.url, context)
        status, body = await self._get(url, headers=provider.headers)
        if not 200 <= status < 300:
            raise MeasurementError(ErrorKind.HTTP_STATUS, str(status))
        return value_at(_json(body), provider.json_path)

    async def _get(
        self,
        url: str,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """(status, body) of a GET to an allowed host; MeasurementError when the host is not
        allowed (nothing is sent), or there is no whole answer in time."""
        try:
            request = self._http.build_request("GET", url, params=params, headers=headers)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError):
            raise MeasurementError(ErrorKind.INVALID_URL) from None
        # Checked on the request as built: the host and port it will connect to.
        target = request.url
        port = target.port or _DEFAULT_PORTS.get(target.scheme, 0)
        if not host_allowed(target.host, port, self._allowed_hosts):
            raise MeasurementError(ErrorKind.REFUSED_HOST, f"{target.host}:{port}")
        try:
            async with self._slots, asyncio.timeout(self._timeout):
                response = await self._http.send(request, stream=True)
                try:
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > self._max_bytes:
                            raise MeasurementError(ErrorKind.TOO_LARGE)
                finally:
                    await response.aclose()
        except TimeoutError:
            raise MeasurementError(ErrorKind.TIMEOUT) from None
        except (httpx.HTTPError, httpx.InvalidURL):
            raise MeasurementError(ErrorKind.UNREACHABLE) from None
        return response.status_code, bytes(body)


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        raise MeasurementError(ErrorKind.NOT_JSON) from None
