"""Analysis egress is the operator's decision (issue 26): a canary's analysis may send
requests only to the hosts the operator lists (ALIASOP_ANALYSIS_ALLOWED_HOSTS). A metric
naming another host ends the analysis at once with a clear reason, and no request reaches
that host. The operator is one of the test's own; the host is the tests' HTTP server, which
records every request it gets."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from shard_operator import shard_operator

from aliasop_dev import bikes

from metric_sources import TestServer
from resources import Versions, View
from support import wait_for

pytestmark = pytest.mark.timeout(240)


def test_analysis_to_an_unlisted_host_is_refused_and_nothing_is_sent(
    k8s: client.ApiClient,
    operator_kubeconfig: str,
    mlflow_uri: str,
    two_versions: Versions,
    model_name: str,
    view: Callable[[str], View],
    restricted: str,
    server: TestServer,
    tmp_path: Path,
) -> None:
    v1, v2 = two_versions
    path = f"/score/{uuid.uuid4().hex}"
    url = server.answer_json(path, {"score": 0.99})  # would pass, were it asked
    analysis = {
        "interval": 2,
        "count": 1,
        "metrics": [
            {
                "name": "score",
                "web": {"url": url, "jsonPath": "$.score"},
                "thresholdRange": {"min": 0.5},
            }
        ],
    }
    allowed = json.dumps(["prometheus.monitoring:9090", "*.metrics.example"])
    with shard_operator(
        k8s, operator_kubeconfig, mlflow_uri, tmp_path, ALIASOP_ANALYSIS_ALLOWED_HOSTS=allowed
    ) as operator:
        operator.create(
            restricted,
            "bikes",
            model=f"models:/{model_name}@champion",
            replicas=2,
            pollIntervalSeconds=5,
            rollout={"strategy": "Canary", "steps": [{"setWeight": 50}, {"analysis": analysis}]},
        )
        bikes_view = view("bikes")
        bikes_view.wait_serving(v1.version)
        bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)

        def aborted() -> dict[str, Any] | None:
            status = bikes_view.status()
            return status if status.get("failedVersion") == v2.version else None

        status = wait_for(aborted, 120, message="the canary aborted")

    host = f"127.0.0.1:{server.port}"
    refused = (
        f"score was refused: refused-host {host}: not among the operator's analysis hosts "
        "(ALIASOP_ANALYSIS_ALLOWED_HOSTS); no request was sent"
    )
    assert refused in status["message"]
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and refused in degraded["message"]
    assert [r for r in server.requests if r[0] == path] == []  # nothing reached the host
    assert status["servingVersion"] == v1.version
    assert "RolloutFailed" in bikes_view.events()
