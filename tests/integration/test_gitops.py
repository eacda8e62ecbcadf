"""What GitOps tools see: children put back when someone edits or deletes them, kstatus (Flux,
kpt, `kubectl wait`) and Argo CD health computed by their real code on live objects, the
scale subresource, and a CRD that `kubectl explain` can describe."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client
from mlflow import MlflowClient

from aliasop_dev import bikes

from resources import Follower, NeverReady, Versions, View
from support import REPO, Cluster, TcpProxy, cache_dir, wait_for

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("operator")]

TOOLS = cache_dir() / "tools" / "bin"
HEALTH_LUA = REPO / "manifests" / "argocd" / "health.lua"
LONG_POLL = 300  # seconds: only a watch can bring a child back within a test's waits


@dataclass(frozen=True)
class Health:
    kstatus: str  # Current | InProgress | Failed | ...
    argocd: str  # Healthy | Progressing | Degraded | Suspended | ...


def health(mdep: dict[str, Any]) -> Health:
    """What kstatus (sigs.k8s.io/cli-utils) and Argo CD's Lua VM (gopher-lua, with the
    shipped health.lua) compute for the object, each by its real code."""

    tool = TOOLS / "gitops-health"
    if not tool.exists():
        pytest.fail(f"{tool} is missing: run tests/tools/build.sh")

    def run(*subcommand: str) -> str:
        result = subprocess.run(
            [str(tool), *subcommand],
            input=json.dumps(mdep),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        status: str = json.loads(result.stdout.splitlines()[0])["status"]
        return status

    return Health(kstatus=run("kstatus"), argocd=run("argocd", str(HEALTH_LUA)))


class History(Follower):
    """Every version of one ModelDeployment the API server shows, through a watch: states
    too short to catch by polling (the first rollout) are seen too."""

    def __init__(self, view: View) -> None:
        self.seen: list[dict[str, Any]] = []
        super().__init__(
            view.custom.list_namespaced_custom_object,
            lambda events: self.seen.extend(body for _, body in events),
            "aliasop.io",
            "v1alpha1",
            view.namespace,
            "modeldeployments",
            field_selector=f"metadata.name={view.name}",
        )

    def first(self, matches: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        return next(o for o in self.seen if matches(o.get("status") or {}))


def condition(mdep: dict[str, Any], type_: str) -> dict[str, Any]:
    conditions = (mdep.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), {})


def test_kstatus_and_argocd_health_on_a_live_resource(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    proxy: TcpProxy,
    never_ready: NeverReady,
    mdeps: Callable[..., Any],
    view: Callable[[str], View],
    installed: Cluster,
) -> None:
    v1, v2 = two_versions
    never_ready.start(v2.version)  # v2's pods never turn Ready: its rollout fails
    bikes_view = view("bikes")
    table: dict[str, Health] = {}

    def wait_until(matches: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        return wait_for(lambda: m if matches(m := bikes_view.mdep()) else None, 90, message=what)

    with History(bikes_view) as history:
        mdeps(
            "bikes",
            model=f"models:/{model_name}@champion",
            trackingUri=proxy.url,
            replicas=1,
            pollIntervalSeconds=5,
            rollout={"progressDeadlineSeconds": 30},
        )
        serving = wait_until(lambda m: condition(m, "Ready").get("status") == "True", "Ready")
        table["new, rolling out"] = health(history.first(lambda s: s.get("phase") == "Progressing"))
        history.check()
    table["serving"] = health(serving)
    waited = installed.kubectl(
        "wait", "--for=condition=Ready", "-n", bikes_view.namespace, "mdep/bikes", "--timeout=5s"
    )
    assert waited.returncode == 0, waited.stderr

    proxy.stop()
    down = wait_until(
        lambda m: condition(m, "RegistryAvailable").get("status") == "False", "registry down"
    )
    table["registry down"] = health(down)
    proxy.start()
    wait_until(lambda m: condition(m, "RegistryAvailable").get("status") == "True", "back")

    bikes_view.patch_spec({"paused": True})
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    table["paused"] = health(
        wait_until(lambda m: (m.get("status") or {}).get("aliasVersion") == v2.version, "paused")
    )

    bikes_view.patch_spec({"paused": False})
    table["rolling out a new version"] = health(
        wait_until(lambda m: (m.get("status") or {}).get("targetVersion") == v2.version, "v2")
    )
    failed = wait_until(
        lambda m: (
            (m.get("status") or {}).get("failedVersion") == v2.version
            and (m.get("status") or {}).get("servingVersion") == v1.version
            and condition(m, "Reconciling").get("status") == "False"
        ),
        "rolled back",
    )
    table["rollout failed, rolled back"] = health(failed)

    MlflowClient(tracking_uri=mlflow_uri).delete_registered_model_alias(model_name, "champion")
    table["alias deleted"] = health(
        wait_until(lambda m: condition(m, "Stalled").get("reason") == "AliasNotFound", "gone")
    )

    assert table == {
        "new, rolling out": Health("InProgress", "Progressing"),
        "serving": Health("Current", "Healthy"),
        "registry down": Health("Current", "Healthy"),
        "paused": Health("Current", "Suspended"),
        "rolling out a new version": Health("InProgress", "Progressing"),
        "rollout failed, rolled back": Health("Failed", "Degraded"),
        "alias deleted": Health("Failed", "Degraded"),
    }


@pytest.fixture
def converging(serving_v1: Callable[..., View]) -> View:
    """`bikes` serving version 1 on 2 replicas, polling so rarely that only the watch of its
    children can put them back within the test's waits."""
    return serving_v1(replicas=2, pollIntervalSeconds=LONG_POLL)


def test_a_deleted_or_edited_service_is_put_back(converging: View) -> None:
    core, namespace = converging.core, converging.namespace
    old_uid = core.read_namespaced_service("bikes", namespace).metadata.uid
    core.delete_namespaced_service("bikes", namespace)

    def recreated() -> client.V1Service | None:
        try:
            service = core.read_namespaced_service("bikes", namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return service if service.metadata.uid != old_uid else None

    wait_for(recreated, 20, message="the Service put back")
    edit = [{"op": "replace", "path": "/spec/ports/0/port", "value": 9999}]  # a JSON patch
    core.patch_namespaced_service("bikes", namespace, edit)
    wait_for(
        lambda: core.read_namespaced_service("bikes", namespace).spec.ports[0].port == 8080,
        20,
        message="the Service's port put back",
    )


def test_a_deployment_scaled_by_hand_or_deleted_is_put_back(converging: View) -> None:
    apps, namespace = converging.apps, converging.namespace
    apps.patch_namespaced_deployment_scale("bikes", namespace, {"spec": {"replicas": 5}})
    wait_for(
        lambda: apps.read_namespaced_deployment("bikes", namespace).spec.replicas == 2,
        20,
        message="spec.replicas enforced",
    )
    deployment = apps.read_namespaced_deployment("bikes", namespace)
    old_pods = {p.metadata.uid for p in converging.pods()}
    apps.delete_namespaced_deployment("bikes", namespace)

    def put_back() -> client.V1Deployment | None:
        again = converging.deployment()
        return again if again and again.metadata.uid != deployment.metadata.uid else None

    # A new Deployment (another UID), whose own 2 pods (none of the old ones) turn Ready.
    wait_for(put_back, 30, message="the Deployment put back")
    wait_for(
        lambda: (
            {p.metadata.uid for p in converging.ready_pods()}.isdisjoint(old_pods)
            and converging.pods_by_version() == {"1": 2}
        ),
        30,
        message="2 new pods",
    )
    converging.wait_serving("1", timeout=30)


def test_replicas_left_out_are_left_to_whoever_scales(
    two_versions: Versions, model_name: str, mdeps: Callable[..., Any], view: Callable[[str], View]
) -> None:
    mdeps("bikes", model=f"models:/{model_name}@champion", pollIntervalSeconds=5)
    bikes_view = view("bikes")
    bikes_view.wait_serving(two_versions[0].version)
    bikes_view.apps.patch_namespaced_deployment_scale(
        "bikes", bikes_view.namespace, {"spec": {"replicas": 3}}
    )
    resolved = bikes_view.status()["lastResolvedTime"]
    # Two passes later (every pass writes lastResolvedTime in these tests), still three.
    wait_for(lambda: bikes_view.status()["lastResolvedTime"] != resolved, 20, message="a pass")
    resolved = bikes_view.status()["lastResolvedTime"]
    wait_for(lambda: bikes_view.status()["lastResolvedTime"] != resolved, 20, message="another")
    deployment = bikes_view.deployment()
    assert deployment is not None and deployment.spec.replicas == 3


def test_kubectl_scale_and_an_hpa_reach_the_deployment(
    serving_v1: Callable[..., View], installed: Cluster
) -> None:
    bikes_view = serving_v1(replicas=1)
    namespace = bikes_view.namespace
    installed.kubectl("scale", "-n", namespace, "mdep/bikes", "--replicas=2")
    wait_for(lambda: bikes_view.pods_by_version() == {"1": 2}, 30, message="2 pods")
    scale = json.loads(
        installed.kubectl(
            "get", "--raw",
            f"/apis/aliasop.io/v1alpha1/namespaces/{namespace}/modeldeployments/bikes/scale",
        ).stdout
    )  # fmt: skip
    wait_for(lambda: bikes_view.status().get("replicas") == 2, 30, message="status.replicas")
    assert scale["spec"]["replicas"] == 2
    assert "app.kubernetes.io/instance=bikes" in scale["status"]["selector"]

    # An HPA raises replicas to its minimum through the scale subresource, whatever its
    # metrics say (there is no metrics server here).
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "bikes", "namespace": namespace},
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "aliasop.io/v1alpha1",
                "kind": "ModelDeployment",
                "name": "bikes",
            },
            "minReplicas": 3,
            "maxReplicas": 4,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80},
                    },
                }
            ],
        },
    }
    installed.kubectl("apply", "-f", "-", input=json.dumps(hpa))
    wait_for(lambda: bikes_view.pods_by_version() == {"1": 3}, 90, message="3 pods by the HPA")
    assert bikes_view.mdep()["spec"]["replicas"] == 3


def test_kubectl_explains_nested_fields(installed: Cluster) -> None:
    explained = installed.kubectl("explain", "modeldeployment.spec.serving.port").stdout
    assert "Container port serving HTTP" in explained
    conditions = installed.kubectl("explain", "mdep.status.conditions.reason").stdout
    assert "Why, in one CamelCase word" in conditions


def test_replicas_handed_to_an_hpa_stay_its_own_through_a_rollout(
    serving_v1: Callable[..., View],
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    installed: Cluster,
) -> None:
    """spec.replicas left out: a real HorizontalPodAutoscaler of the Deployment takes the
    replicas over, and a new version rolls out with them. The Deployment's replicas, as a
    watch sees their every change, never drop below the 3 handed over
    (kubernetes/kubernetes#67135: an apply that stops setting replicas resets them to 1), and
    stay the HPA's 4 through the rollout."""
    v2 = two_versions[1]
    bikes_view = serving_v1(replicas=3)
    namespace = bikes_view.namespace
    seen: list[int] = []

    def record(events: list[tuple[str, client.V1Deployment]]) -> None:
        seen.extend(deployment.spec.replicas for _, deployment in events)

    follower = Follower(
        bikes_view.apps.list_namespaced_deployment,
        record,
        namespace=namespace,
        field_selector="metadata.name=bikes",
    )
    with follower:
        generation = bikes_view.mdep()["metadata"]["generation"]
        bikes_view.patch_spec({"replicas": None})  # a merge patch: null removes the field
        wait_for(
            lambda: bikes_view.status().get("observedGeneration", 0) > generation,
            30,
            message="the pass that stops setting replicas",
        )
        # The HPA raises the Deployment's replicas to its minimum through their scale
        # subresource, whatever its metrics say (there is no metrics server here).
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "bikes", "namespace": namespace},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "bikes"},
                "minReplicas": 4,
                "maxReplicas": 5,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 80},
                        },
                    }
                ],
            },
        }
        installed.kubectl("apply", "-f", "-", input=json.dumps(hpa))
        wait_for(lambda: bikes_view.pods_by_version() == {"1": 4}, 90, message="4 pods by the HPA")

        bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
        bikes_view.wait_serving(v2.version)
        wait_for(lambda: bikes_view.pods_by_version() == {v2.version: 4}, 60, message="4 of v2")
        follower.check()
    assert seen[0] == 3 and seen[-1] == 4, seen
    assert min(seen) == 3 and seen.index(4) > 0 and min(seen[seen.index(4) :]) == 4, seen
    deployment = bikes_view.deployment()
    assert (
        deployment is not None
        and deployment.spec.template.metadata.labels["aliasop.io/model-version"] == v2.version
    )
