"""The operator's HTTP endpoint: Prometheus `/metrics` and MLflow webhooks.

Every replica takes webhook deliveries (the Service sends them to any ready one); a standby
passes each on to the leader, at the URL the leader's Lease advertises. Readiness does not
follow leadership: a standby that is never Ready would stall every rolling update of the
operator's own Deployment.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aliasop.metrics import WEBHOOK_DELIVERIES
from aliasop.webhooks import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryVerifier,
    Entity,
    Rejection,
    WebhookRejected,
)

WEBHOOK_PATH = "/webhooks/mlflow"
# Marks a delivery a standby passed on: one that reaches a standby again is not passed on.
FORWARDED_HEADER = "X-Aliasop-Forwarded"
_FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=10)
logger = logging.getLogger(__name__)


class Leadership(Protocol):
    """Whether this replica leads, and where the leader takes deliveries (LeaderElector)."""

    @property
    def leading(self) -> bool: ...

    @property
    def leader_url(self) -> str | None: ...


def build_app(
    model_changed: Callable[[str, bool], Awaitable[int]],
    verifier: DeliveryVerifier | None,
    leadership: Leadership | None = None,
) -> web.Application:
    """`/metrics`, and `/webhooks/mlflow`, which tells `model_changed` (the resolver's) of
    the model a verified delivery names, and whether its aliases changed; or, on a standby
    (`leadership` says it does not lead), passes the delivery on to the leader."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def webhook(request: web.Request) -> web.Response:
        if verifier is None:
            WEBHOOK_DELIVERIES.labels(result="disabled").inc()
            return web.json_response({"error": "webhooks are not configured"}, status=404)
        try:
            delivery = verifier.check_headers(request.headers)  # before reading any body
            change = verifier.check_body(delivery, await request.read())
        except WebhookRejected as rejected:
            WEBHOOK_DELIVERIES.labels(result=rejected.reason.value).inc()
            logger.warning(f"refused an MLflow webhook delivery: {rejected}")
            status = 400 if rejected.reason is Rejection.MALFORMED else 401
            return web.json_response({"error": str(rejected)}, status=status)
        # A delivery counts as handled only once acted on: MLflow retries one that failed.
        if change is None:
            verifier.handled(delivery)
            WEBHOOK_DELIVERIES.labels(result="ignored").inc()
            return web.json_response({"refreshed": 0})
        if leadership is not None and not leadership.leading:
            answer = await _pass_on(request.headers, await request.read(), leadership.leader_url)
            if answer.status < 300:
                verifier.handled(delivery)
            return answer
        refreshed = await model_changed(change.model, change.entity is Entity.ALIAS)
        verifier.handled(delivery)
        WEBHOOK_DELIVERIES.labels(result="accepted").inc()
        return web.json_response({"refreshed": refreshed})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_post(WEBHOOK_PATH, webhook)
    return app


async def _pass_on(headers: Mapping[str, str], body: bytes, leader_url: str | None) -> web.Response:
    """A standby's answer to a verified delivery: the leader's, once it has taken it."""
    if leader_url is None or headers.get(FORWARDED_HEADER):
        WEBHOOK_DELIVERIES.labels(result="no_leader").inc()
        # MLflow may deliver again; if not, the next leader's first passes read every alias.
        return web.json_response(
            {"error": "this replica stands by, and knows no leader to pass the delivery to"},
            status=503,
        )
    signed = (SIGNATURE_HEADER, TIMESTAMP_HEADER, DELIVERY_ID_HEADER, "Content-Type")
    passed_on = {name: headers[name] for name in signed if name in headers}
    try:
        async with (
            aiohttp.ClientSession(timeout=_FORWARD_TIMEOUT) as session,
            session.post(
                leader_url, data=body, headers={**passed_on, FORWARDED_HEADER: "1"}
            ) as answer,
        ):
            payload, status = await answer.read(), answer.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        WEBHOOK_DELIVERIES.labels(result="no_leader").inc()
        logger.warning(f"could not pass a webhook delivery on to the leader at {leader_url}: {exc}")
        return web.json_response(
            {"error": f"this replica stands by, and the leader did not answer: {exc}"},
            status=503,
        )
    WEBHOOK_DELIVERIES.labels(result="passed_on").inc()
    return web.Response(body=payload, status=status, content_type="application/json")


async def serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
