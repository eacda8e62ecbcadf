"""An operator process of a test's own, configured with settings the session's operator does
not have (write grants, analysis hosts). It follows only resources labelled with its shard,
which the session's operator leaves alone; `create` makes one."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client

from aliasop.webhooks import DELIVERY_ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from aliasop_dev import local

from resources import WEBHOOK_SECRET, endpoint
from support import SHARD_LABEL


class ShardOperator:
    def __init__(self, process: local.LocalProcess, shard: str, k8s: client.ApiClient) -> None:
        self.process, self.shard = process, shard
        self.custom = client.CustomObjectsApi(k8s)

    def create(self, namespace: str, name: str, **spec: Any) -> None:
        """A ModelDeployment this operator follows (and the session's does not)."""
        body = {
            "apiVersion": "aliasop.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": namespace, "labels": {SHARD_LABEL: self.shard}},
            "spec": spec,
        }
        self.custom.create_namespaced_custom_object(
            "aliasop.io", "v1alpha1", namespace, "modeldeployments", body
        )

    def alias_moved(self, model: str, alias: str, version: str) -> None:
        """Deliver what MLflow's webhook would (signed with the tests' secret): the operator
        fetches the model's aliases at once."""
        body = json.dumps(
            {
                "entity": "model_version_alias",
                "action": "created",
                "timestamp": "now",
                "data": {"name": model, "alias": alias, "version": version},
            }
        )
        delivery, stamp = f"d-{uuid.uuid4()}", str(int(time.time()))
        headers = {
            DELIVERY_ID_HEADER: delivery,
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign(WEBHOOK_SECRET, delivery, stamp, body),
            "Content-Type": "application/json",
        }
        url = endpoint(self.process, "/webhooks/mlflow")
        httpx.post(url, content=body, headers=headers, timeout=10).raise_for_status()


@contextmanager
def shard_operator(
    k8s: client.ApiClient, kubeconfig: str, mlflow_uri: str, workdir: Path, **env: str
) -> Iterator[ShardOperator]:
    """Run an operator with `env` added to its settings until the block ends."""
    shard = f"tenancy-{uuid.uuid4().hex[:6]}"
    health = local.free_port()
    process = local.operator(
        workdir / "operator.log", kubeconfig, mlflow_uri, health, webhook_secret=WEBHOOK_SECRET
    )
    process.env.update(
        ALIASOP_WATCH_LABEL_SELECTOR=f"{SHARD_LABEL}={shard}",
        ALIASOP_STATUS_REFRESH_SECONDS="0",
        **env,
    )
    process.start()
    try:
        process.wait_ready(f"http://127.0.0.1:{health}/healthz", timeout=60)
        yield ShardOperator(process, shard, k8s)
    finally:
        process.stop()
        print(f"--- operator log tail ---\n{process.tail(60)}")
