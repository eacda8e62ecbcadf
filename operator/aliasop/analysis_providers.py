"""The analysis providers: a measurement over HTTP, from Prometheus or a JSON web endpoint.

I/O behind `interfaces.MetricProvider`; what an answer means is `aliasop.analysis`
(`prometheus_value`, `value_at`). Every request has a deadline for the whole exchange and a cap
on the answer's size, and is never retried here: an error is one measurement's error, which
the analysis counts against `consecutiveErrorLimit` and retries at its interval.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from aliasop.analysis import MeasurementError, prometheus_value, value_at
from aliasop.analysis_models import AnalysisMetric, PrometheusProvider, WebProvider
from aliasop.templating import TemplateContext, render_query, render_url

DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_ANSWER_BYTES = 1 << 20  # a number comes in far less
DEFAULT_CONCURRENCY = 16
_SHOWN = 200  # characters of an unexpected answer shown in an error


class HttpMetricProvider:
    """Measures a metric with its Prometheus query or its web request."""

    def __init__(
        self,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        concurrency: int = DEFAULT_CONCURRENCY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`concurrency`: requests in flight at once, over every resource's analysis; a
        measurement waiting for its turn is not timed yet."""
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
        raise MeasurementError(f"metric {metric.name} has no provider")

    async def prometheus(self, provider: PrometheusProvider, context: TemplateContext) -> float:
        """An instant query: GET <address>/api/v1/query?query=..."""
        address = render_url(provider.address, context).rstrip("/")
        query = render_query(provider.query, context)
        status, body = await self._get(
            f"{address}/api/v1/query", "Prometheus", params={"query": query}
        )
        try:
            answer = json.loads(body)
        except ValueError:
            raise MeasurementError(
                f"Prometheus at {address} answered HTTP {status} that is not JSON: {_shown(body)}"
            ) from None
        # Prometheus answers a refused query with 400/422 and a JSON error: say what it said.
        if status != 200 and not (isinstance(answer, dict) and answer.get("error")):
            raise MeasurementError(f"Prometheus at {address} answered HTTP {status}")
        return prometheus_value(answer)

    async def web(self, provider: WebProvider, context: TemplateContext) -> float:
        """GET the URL; the number at jsonPath in its JSON answer."""
        url = render_url(provider.url, context)
        status, body = await self._get(url, "the web metric", headers=provider.headers)
        if not 200 <= status < 300:
            raise MeasurementError(f"{_where(url)} answered HTTP {status}: {_shown(body)}")
        try:
            document = json.loads(body)
        except ValueError:
            raise MeasurementError(
                f"{_where(url)} answered something that is not JSON: {_shown(body)}"
            ) from None
        return value_at(document, provider.json_path)

    async def _get(
        self,
        url: str,
        what: str,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """(status, body) of a GET; MeasurementError when there is no whole answer in time."""
        try:
            async with self._slots, asyncio.timeout(self._timeout):
                request = self._http.build_request("GET", url, params=params, headers=headers)
                response = await self._http.send(request, stream=True)
                try:
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > self._max_bytes:
                            raise MeasurementError(
                                f"{what} at {_where(url)} answered more than "
                                f"{self._max_bytes} bytes"
                            )
                finally:
                    await response.aclose()
        except TimeoutError:
            raise MeasurementError(
                f"{what} at {_where(url)} did not answer within {self._timeout:g}s"
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            reason = f"{type(error).__name__} {error}".strip()
            raise MeasurementError(
                f"{what} at {_where(url)} could not be reached: {reason}"
            ) from None
        return response.status_code, bytes(body)


def _where(url: str) -> str:
    """The URL without its query (which may be long, or hold a key)."""
    try:
        return str(httpx.URL(url).copy_with(query=None, fragment=None))
    except httpx.InvalidURL:
        return url.split("?", 1)[0]


def _shown(body: bytes | Any) -> str:
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    text = " ".join(text.split())
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."
