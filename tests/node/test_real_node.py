"""Pods run for real on the real node: containerd starts their containers, the CNI bridge gives
them addresses this host reaches, the kubelet's HTTP probes decide readiness, kube-proxy routes a
Service's ClusterIP to them, and the kernel enforces their securityContext. Had kwok (which
manages only its own node) touched these pods, its stages would have made every one Ready."""

from __future__ import annotations

import contextlib
import ipaddress
from collections import Counter
from typing import Any

import pytest
from kubernetes import client

from realnode import HTTP, REAL_NODE_LABEL, SMOKE_IMAGE, RealNode, condition, on_real_node
from support import Cluster, wait_for

# func_only: the first test must not spend its budget on starting the session's cluster.
pytestmark = pytest.mark.timeout(120, func_only=True)

# A web server answering its pod's name, writing only to its emptyDir (the root is read-only).
SERVE = [
    "sh",
    "-c",
    "mkdir -p /tmp/www && hostname > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
]
USER = 10001
LOCKED_DOWN = {
    "runAsUser": USER,
    "runAsGroup": USER,
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def pod_spec(command: list[str], **container: Any) -> dict[str, Any]:
    """One smoke-image container, locked down, with a writable /tmp; stopped at once on
    deletion (busybox as PID 1 ignores SIGTERM)."""
    return on_real_node(
        {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": SMOKE_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": command,
                    "securityContext": LOCKED_DOWN,
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    **container,
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        }
    )


def pod(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def readiness(path: str) -> dict[str, Any]:
    return {"readinessProbe": {"httpGet": {"path": path, "port": 8080}, "periodSeconds": 1}}


def get(url: str) -> str:
    with HTTP.open(url, timeout=3) as response:
        body: bytes = response.read()
    return body.decode().strip()


def available(apps: client.AppsV1Api, namespace: str, name: str, replicas: int) -> bool:
    d = apps.read_namespaced_deployment(name, namespace)
    return (
        d.status.observed_generation == d.metadata.generation
        and d.status.available_replicas == replicas
        and d.status.updated_replicas == replicas
    )


def test_deployment_serves_through_its_cluster_ip(
    k8s: client.ApiClient, namespace: str, real_node: RealNode, cluster: Cluster
) -> None:
    apps, core = client.AppsV1Api(k8s), client.CoreV1Api(k8s)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": pod_spec(SERVE, **readiness("/")),
                },
            },
        },
    )
    core.create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    wait_for(lambda: available(apps, namespace, "web", 2), timeout=60, message="web 2/2 available")

    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    names = {p.metadata.name for p in pods}
    assert len(names) == 2
    for p in pods:
        assert p.spec.node_name == real_node.name
        assert ipaddress.ip_address(p.status.pod_ip) in real_node.pod_network
        (status,) = p.status.container_statuses
        # A container containerd runs, from the image imported into it (kwok's stages write
        # neither).
        assert status.container_id.startswith("containerd://")
        assert status.image_id.startswith("sha256:") or "@sha256:" in status.image_id
        # The pod's own address answers from this host: a real network, not an invented IP.
        assert get(f"http://{p.status.pod_ip}:8080/") == p.metadata.name

    cluster_ip = core.read_namespaced_service("web", namespace).spec.cluster_ip
    url = f"http://{cluster_ip}/"
    # kube-proxy writes the Service's rules, and then each endpoint's, at its syncs (at most one
    # a second): a new connection each time, until both pods have answered through it.
    seen: Counter[str] = Counter()

    def both_answer() -> bool:
        with contextlib.suppress(OSError):
            seen[get(url)] += 1
        return set(seen) == names

    wait_for(both_answer, timeout=30, interval=0.2, message=f"both pods to answer {url}")
    # Then every request is answered, by one of them.
    assert {get(url) for _ in range(20)} <= names

    # From inside a pod too: through its default route to the node, to the other pod and back to
    # itself (the bridge's hairpin).
    client_pod = sorted(names)[0]
    request = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {cluster_ip} 80 | tail -n 1"
    from_pod: Counter[str] = Counter()

    def both_answer_a_pod() -> bool:
        done = cluster.kubectl(
            "exec", "-n", namespace, client_pod, "--", "sh", "-c", request, check=False
        )
        if done.returncode == 0:
            from_pod[done.stdout.strip()] += 1
        return set(from_pod) == names

    wait_for(both_answer_a_pod, timeout=30, interval=0.2, message="both pods to answer a pod")


def test_security_context_holds_in_the_container(
    k8s: client.ApiClient, namespace: str, real_node: RealNode, cluster: Cluster
) -> None:
    core = client.CoreV1Api(k8s)
    core.create_namespaced_pod(namespace, pod("locked", pod_spec(["sleep", "3600"])))
    wait_for(
        lambda: condition(core.read_namespaced_pod("locked", namespace), "Ready"),
        timeout=60,
        message="pod locked Ready",
    )

    def run(*command: str) -> tuple[int, str, str]:
        done = cluster.kubectl("exec", "-n", namespace, "locked", "--", *command, check=False)
        return done.returncode, done.stdout.strip(), done.stderr

    assert run("id", "-u")[1] == str(USER)
    assert run("id", "-g")[1] == str(USER)
    code, _, error = run("touch", "/written")
    assert code != 0
    assert "Read-only file system" in error
    # Its emptyDir takes the same write: the refusal above is the read-only root's.
    assert run("touch", "/tmp/written")[0] == 0
    status = run("cat", "/proc/self/status")[1].splitlines()
    fields = {key: value.strip() for key, _, value in (line.partition(":") for line in status)}
    assert fields["CapEff"] == "0000000000000000"  # capabilities: drop ALL
    assert fields["NoNewPrivs"] == "1"  # allowPrivilegeEscalation: false


def container_text(p: client.V1Pod) -> str:
    """Every reason and message of the pod's container status, current and last state."""
    parts: list[str] = []
    for status in p.status.container_statuses or []:
        for state in (status.state, status.last_state):
            for detail in (state.waiting, state.terminated) if state else ():
                if detail is not None:
                    parts += [detail.reason or "", detail.message or ""]
    return " ".join(parts)


def probe_failures(core: client.CoreV1Api, namespace: str, name: str) -> str:
    events = core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},reason=Unhealthy"
    ).items
    return " ".join(e.message or "" for e in events)


def test_pods_that_cannot_serve_never_become_ready(
    k8s: client.ApiClient, namespace: str, real_node: RealNode
) -> None:
    core = client.CoreV1Api(k8s)
    # The process the container should run is not in the image: runc cannot start it.
    core.create_namespaced_pod(namespace, pod("no-binary", pod_spec(["/bin/serve"])))
    # The image runs as root; runAsNonRoot without a user: the kubelet refuses to create it.
    as_root = pod_spec(SERVE)
    as_root["containers"][0]["securityContext"] = {"runAsNonRoot": True}
    core.create_namespaced_pod(namespace, pod("as-root", as_root))
    # It runs, but its readiness probe asks for a page the server does not have: 404.
    core.create_namespaced_pod(namespace, pod("bad-probe", pod_spec(SERVE, **readiness("/ping"))))

    seen: dict[str, str] = {}

    def evidence() -> bool:
        pods = {p.metadata.name: p for p in core.list_namespaced_pod(namespace).items}
        seen.update({name: container_text(p) for name, p in pods.items()})
        seen["bad-probe events"] = probe_failures(core, namespace, "bad-probe")
        return (
            "no such file or directory" in seen["no-binary"]
            and "CreateContainerConfigError" in seen["as-root"]
            and "runAsNonRoot" in seen["as-root"]
            and "statuscode: 404" in seen["bad-probe events"]
        )

    try:
        wait_for(evidence, timeout=60, message="each pod's own failure, reported by the kubelet")
    except TimeoutError as error:
        raise AssertionError(f"{error}; what the pods show: {seen}") from error

    pods = core.list_namespaced_pod(namespace).items
    assert {p.spec.node_name for p in pods} == {real_node.name}
    for p in pods:
        assert not condition(p, "Ready"), p.metadata.name
    running = core.read_namespaced_pod("bad-probe", namespace)
    assert running.status.container_statuses[0].state.running is not None


def test_pods_without_the_toleration_stay_off_the_node(
    k8s: client.ApiClient, namespace: str, real_node: RealNode
) -> None:
    core = client.CoreV1Api(k8s)
    node = core.read_node(real_node.name)
    assert node.metadata.labels[REAL_NODE_LABEL] == "true"
    taints = {(t.key, t.value, t.effect) for t in node.spec.taints or []}
    assert (REAL_NODE_LABEL, "true", "NoSchedule") in taints, taints
    # Selects the node, but does not tolerate its taint: the scheduler finds no node for it.
    spec = pod_spec(["sleep", "3600"])
    del spec["tolerations"]
    core.create_namespaced_pod(namespace, pod("untolerated", spec))

    def refused() -> str:
        events = core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=untolerated,reason=FailedScheduling"
        ).items
        return " ".join(e.message or "" for e in events)

    message = wait_for(refused, timeout=30, message="the scheduler's FailedScheduling event")
    # The scheduler's message counts the nodes each filter refused, without naming the taint.
    assert "had untolerated taint(s)" in message, message
    untolerated = core.read_namespaced_pod("untolerated", namespace)
    assert untolerated.status.phase == "Pending"
    assert untolerated.spec.node_name is None
