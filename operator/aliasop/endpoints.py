"""The operator's HTTP endpoint: Prometheus `/metrics` and MLflow webhooks."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from aliasop.metrics import WEBHOOK_DELIVERIES
from aliasop.webhooks import DeliveryVerifier, Entity, WebhookRejected

WEBHOOK_PATH = "/webhooks/mlflow"
logger = logging.getLogger(__name__)


def build_app(
    model_changed: Callable[[str, bool], Awaitable[int]], verifier: DeliveryVerifier | None
) -> web.Application:
    """`/metrics`, and `/webhooks/mlflow`, which tells `model_changed` (the resolver's) of
    the model a verified delivery names, and whether its aliases changed."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def webhook(request: web.Request) -> web.Response:
        if verifier is None:
            WEBHOOK_DELIVERIES.labels(result="disabled").inc()
            return web.json_response({"error": "webhooks are not configured"}, status=404)
        try:
            change = verifier.verify(request.headers, await request.read())
        except WebhookRejected as rejected:
            WEBHOOK_DELIVERIES.labels(result=rejected.reason.value).inc()
            logger.warning(f"refused an MLflow webhook delivery: {rejected}")
            return web.json_response({"error": str(rejected)}, status=401)
        if change is None:
            WEBHOOK_DELIVERIES.labels(result="ignored").inc()
            return web.json_response({"refreshed": 0})
        refreshed = await model_changed(change.model, change.entity is Entity.ALIAS)
        WEBHOOK_DELIVERIES.labels(result="accepted").inc()
        return web.json_response({"refreshed": refreshed})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_post(WEBHOOK_PATH, webhook)
    return app


async def serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner
