"""MLflow webhooks: real deliveries from a real MLflow server, and forged ones refused."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import httpx
import pytest

from aliasop.webhooks import DELIVERY_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from aliasop_dev import bikes, local

from resources import WEBHOOK_SECRET, Versions, View, deliveries, endpoint
from support import wait_for

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("operator")]


@pytest.mark.usefixtures("mlflow_webhook")
def test_a_real_webhook_rolls_out_long_before_the_next_poll(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    serving_v1: Callable[..., View],
    operator: local.LocalProcess,
) -> None:
    _, v2 = two_versions
    bikes_view = serving_v1(replicas=1, pollIntervalSeconds=600)
    accepted = deliveries(operator).get("accepted", 0)

    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    # Polling would take ten minutes: only the webhook can make this in time.
    wait_for(lambda: bikes_view.template_version() == v2.version, 15, message="template at v2")
    bikes_view.wait_serving(v2.version)
    assert deliveries(operator)["accepted"] > accepted


def test_forged_stale_and_replayed_deliveries_are_refused(operator: local.LocalProcess) -> None:
    url = endpoint(operator, "/webhooks/mlflow")
    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": "now",
            "data": {"name": "bikes", "alias": "champion", "version": "9"},
        }
    )

    def post(secret: str, delivery_id: str, sent_at: float) -> int:
        stamp = str(int(sent_at))
        headers = {
            DELIVERY_ID_HEADER: delivery_id,
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign(secret, delivery_id, stamp, body),
            "Content-Type": "application/json",
        }
        return httpx.post(url, content=body, headers=headers).status_code

    before = deliveries(operator)
    genuine = f"d-{uuid.uuid4()}"
    assert post("not-the-secret", f"d-{uuid.uuid4()}", time.time()) == 401
    assert post(WEBHOOK_SECRET, f"d-{uuid.uuid4()}", time.time() - 3600) == 401
    assert post(WEBHOOK_SECRET, genuine, time.time()) == 200
    assert post(WEBHOOK_SECRET, genuine, time.time()) == 401  # replayed
    assert httpx.post(url, content=body).status_code == 401  # unsigned
    after = deliveries(operator)
    for result in ("bad_signature", "stale", "replayed", "unsigned", "accepted"):
        assert after.get(result, 0) == before.get(result, 0) + 1, result
