"""What a person asks of a rollout through annotations (the contract a kubectl plugin
writes to), on the test cluster: abort a canary, retry it, promote it past every step.

Ready pods are followed through a watch (resources.Recorder): across both sides they never
drop below spec.replicas, the abort included."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from mlflow import MlflowClient

from aliasop_dev import bikes

from resources import Recorder, Versions, View
from support import wait_for

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("operator")]

REPLICAS = 4


def annotate(view: View, **annotations: str | None) -> None:
    """Set (None: remove) aliasop.io/<name> annotations, promote_full for promote-full."""
    patch = {f"aliasop.io/{k.replace('_', '-')}": v for k, v in annotations.items()}
    client.CustomObjectsApi(view.apps.api_client).patch_namespaced_custom_object(
        "aliasop.io",
        "v1alpha1",
        view.namespace,
        "modeldeployments",
        view.name,
        {"metadata": {"annotations": patch}},
    )


Side = tuple[int, str | None]


def sides(view: View) -> tuple[Side, Side]:
    """(replicas, version) of the stable and the canary Deployments; (0, None): none."""
    found: list[Side] = []
    for name in (view.name, f"{view.name}-canary"):
        side = View(view.apps.api_client, view.namespace, name)
        deployment = side.deployment()
        if deployment is None:
            found.append((0, None))
        else:
            found.append((int(deployment.spec.replicas), side.template_version()))
    return found[0], found[1]


def at_pause(view: View, version: str) -> dict[str, Any]:
    def paused() -> dict[str, Any] | None:
        canary = view.status().get("canary") or {}
        wanted = (canary.get("version"), canary.get("phase"), canary.get("step"))
        return canary if wanted == (version, "Paused", 2) else None

    return wait_for(paused, 90, message=f"the canary of version {version} at its pause")


def test_a_canary_aborted_retried_and_promoted_past_its_steps(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    serving_v1: Callable[..., View],
) -> None:
    v1, v2 = two_versions
    steps = [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]
    view = serving_v1(replicas=REPLICAS, rollout={"strategy": "Canary", "steps": steps})
    with Recorder(view, steady_version=v1.version) as recorder:
        bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
        at_pause(view, v2.version)

        annotate(view, abort=v2.version)

        def aborted() -> dict[str, Any] | None:
            """Aborted, the stable side whole and Ready again (while it grows back the
            phase already says Aborted, and Ready is False: progress is under way)."""
            status = view.status()
            ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
            done = (
                status.get("phase") == "Aborted"
                and (ready.get("status"), ready.get("reason")) == ("True", "RolloutAborted")
                and sides(view) == ((REPLICAS, v1.version), (0, v2.version))
            )
            return status if done else None

        status = wait_for(aborted, 90, message="the canary aborted, its pods gone")
        assert status.get("canary") is None
        assert status["failedVersion"] == v2.version and status["aliasVersion"] == v2.version
        assert f"aliasop.io/retry={v2.version}" in status["message"]
        assert (status["history"][0]["version"], status["history"][0]["outcome"]) == (
            v2.version,
            "Aborted",
        )
        assert "RolloutAborted" in view.events()
        champion = MlflowClient(mlflow_uri).get_model_version_by_alias(model_name, "champion")
        assert champion.version == v2.version  # the alias left alone

        # A retry runs the canary again; promote-full then skips what is left of it.
        annotate(view, abort=None, retry=v2.version)
        at_pause(view, v2.version)
        assert view.status()["history"][0]["reason"] == "Retried"
        annotate(view, promote_full=v2.version)
        view.wait_serving(v2.version, timeout=120)
        wait_for(lambda: sides(view)[1][0] == 0, 60, message="the canary at 0")
        recorder.check()
        assert recorder.fewest_ready is not None and recorder.fewest_ready >= REPLICAS
    assert sides(view)[0] == (REPLICAS, v2.version)
