"""Webhook deliveries: one a standby answered 503 is taken when MLflow sends it again, and
malformed headers are refused with 400 or 401, never a 500. Real operators (a leader and a
standby of a shard of their own, as in test_high_availability.py), the real MLflow server
and the test cluster; the deliveries are signed as MLflow signs them, and a retry is the
same request again, as MLflow's retries are."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client
from test_high_availability import Replicas

from aliasop.webhooks import DELIVERY_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from aliasop_dev import bikes, local

from resources import WEBHOOK_SECRET, Versions, View, counts_by, deliveries, endpoint
from support import SHARD_LABEL, wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def shard(
    k8s: client.ApiClient, operator_kubeconfig: str, mlflow_uri: str, tmp_path: Path
) -> Iterator[Replicas]:
    replicas = Replicas(k8s, operator_kubeconfig, mlflow_uri, tmp_path)
    try:
        yield replicas
    finally:
        replicas.stop()


def alias_moved(model: str) -> tuple[dict[str, str], bytes]:
    """A delivery of `model_version_alias.created` for `model`, signed as MLflow signs it."""
    body = json.dumps(
        {
            "entity": "model_version_alias",
            "action": "created",
            "timestamp": "2026-01-01T00:00:00Z",
            "data": {"name": model, "alias": "champion", "version": "2"},
        }
    )
    delivery_id, stamp = str(uuid.uuid4()), str(int(time.time()))
    headers = {
        DELIVERY_ID_HEADER: delivery_id,
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign(WEBHOOK_SECRET, delivery_id, stamp, body),
        "Content-Type": "application/json",
    }
    return headers, body.encode()


def resolutions(operator: local.LocalProcess) -> float:
    """The resolutions `operator` made (aliasop_resolutions_total)."""
    return sum(counts_by(operator, "aliasop_resolutions_total", "result").values())


def test_a_delivery_retried_after_a_standby_s_503_is_acted_on(
    shard: Replicas,
    k8s: client.ApiClient,
    restricted: str,
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
) -> None:
    v1, v2 = two_versions
    # The leader takes no deliveries (no HTTP port): the standby knows nowhere to pass one.
    shard.start("a", ALIASOP_HTTP_PORT="0")
    client.CustomObjectsApi(k8s).create_namespaced_custom_object(
        "aliasop.io",
        "v1alpha1",
        restricted,
        "modeldeployments",
        {
            "apiVersion": "aliasop.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "bikes", "labels": {SHARD_LABEL: shard.shard}},
            # Polling would take ten minutes: only a delivery can roll a move out in time.
            "spec": {
                "model": f"models:/{model_name}@champion",
                "replicas": 1,
                "pollIntervalSeconds": 600,
            },
        },
    )
    bikes_view = View(k8s, restricted, "bikes")
    bikes_view.wait_serving(v1.version)
    assert shard.wait_leader() == "a"
    standby = shard.start("b")
    url = endpoint(standby, "/webhooks/mlflow")
    headers, body = alias_moved(model_name)

    assert httpx.post(url, content=body, headers=headers, timeout=30).status_code == 503

    shard.processes["a"].stop()  # the leader hands over to the standby
    shard.wait_leader(other_than="a")
    # The new leader's first pass reads the alias (still version 1) before it moves.
    wait_for(lambda: resolutions(standby), 30, message="the new leader's first pass")
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    retry = httpx.post(url, content=body, headers=headers, timeout=30)  # the same request

    assert (retry.status_code, retry.json()) == (200, {"refreshed": 1})
    wait_for(lambda: bikes_view.template_version() == v2.version, 20, message="template at v2")
    bikes_view.wait_serving(v2.version)
    again = httpx.post(url, content=body, headers=headers, timeout=30)
    assert again.status_code == 401  # handled once: now it is a replay
    assert deliveries(standby).get("replayed") == 1


def signed_with_timestamp(stamp: str) -> dict[str, str]:
    """A delivery's headers with `stamp` as its timestamp, and a signature that covers it."""
    headers, body = alias_moved("bikes")
    signature = sign(WEBHOOK_SECRET, headers[DELIVERY_ID_HEADER], stamp, body.decode())
    return {**headers, TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature}


MALFORMED: list[tuple[str, dict[str, str | bytes], int]] = [
    # Signed with the secret, and yet: nan is no time, and compares as recent to any.
    ("nan-timestamp", {**signed_with_timestamp("nan")}, 400),
    ("arabic-digits-timestamp", {**signed_with_timestamp("\u0661\u0662")}, 400),
    ("non-ascii-delivery-id", {DELIVERY_ID_HEADER: "d-\u00e9t\u00e9".encode()}, 400),
    ("non-ascii-signature", {SIGNATURE_HEADER: "v1,\u00ff".encode()}, 400),
    ("no-signature", {SIGNATURE_HEADER: ""}, 401),
]


@pytest.mark.parametrize(
    ("case", "changed", "status"), MALFORMED, ids=[case for case, _, _ in MALFORMED]
)
def test_malformed_headers_get_400_or_401_never_500(
    operator: local.LocalProcess,
    case: str,
    changed: dict[str, str | bytes],
    status: int,
) -> None:
    headers, body = alias_moved("bikes")
    before = deliveries(operator)
    sent = {
        name: value.encode() if isinstance(value, str) else value
        for name, value in {**headers, **changed}.items()
    }
    answer = httpx.post(endpoint(operator, "/webhooks/mlflow"), content=body, headers=sent)
    assert answer.status_code == status
    result = "malformed" if status == 400 else "unsigned"
    assert deliveries(operator).get(result, 0) == before.get(result, 0) + 1


def test_a_body_is_not_read_when_the_headers_are_refused(operator: local.LocalProcess) -> None:
    """A delivery long stale, with a body beyond what the server reads (1 MiB): refused for
    its headers (401) before the body is read, which would answer 413."""
    headers, _ = alias_moved("bikes")
    stale = str(int(time.time()) - 3600)
    answer = httpx.post(
        endpoint(operator, "/webhooks/mlflow"),
        content=b" " * (2 * 1024 * 1024),
        headers={**headers, TIMESTAMP_HEADER: stale},
    )
    assert answer.status_code == 401
