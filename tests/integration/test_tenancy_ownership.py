"""Nothing aliasop does not own is changed or deleted (issue 26), on the test cluster: a
Service or Deployment made by hand under a ModelDeployment's name, another ModelDeployment's
side Service, and the explicit handover (`aliasop.io/adopt`) that lets aliasop take one.

"Left as it was" is read from the object itself: its uid (not deleted and made anew), its
owners, its selector, and its managedFields (aliasop's field manager never wrote it)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from resources import Versions, View
from support import wait_for

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("operator")]

FOREIGN_SELECTOR = {"app": "web-frontend"}
ADOPT = "aliasop.io/adopt"
# What the Service of a ModelDeployment `web` selects.
ALIASOP_SELECTOR = {
    "app.kubernetes.io/name": "model-server",
    "app.kubernetes.io/instance": "web",
    "app.kubernetes.io/managed-by": "aliasop",
}


def foreign_service(
    core: client.CoreV1Api, namespace: str, name: str, annotations: dict[str, str] | None = None
) -> client.V1Service:
    """A Service made by hand: its own selector, a port named other than aliasop's `http`."""
    body = client.V1Service(
        metadata=client.V1ObjectMeta(name=name, annotations=annotations),
        spec=client.V1ServiceSpec(
            selector=FOREIGN_SELECTOR,
            ports=[client.V1ServicePort(name="legacy", port=80, target_port=8080)],
        ),
    )
    return core.create_namespaced_service(namespace, body)


def foreign_deployment(apps: client.AppsV1Api, namespace: str, name: str) -> client.V1Deployment:
    """A Deployment made by hand, with no replicas (its pods are not the point)."""
    body = client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=0,
            selector=client.V1LabelSelector(match_labels=FOREIGN_SELECTOR),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=FOREIGN_SELECTOR),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="web", image="registry.invalid/web:1")]
                ),
            ),
        ),
    )
    return apps.create_namespaced_deployment(namespace, body)


def read(view: View, kind: str, name: str) -> Any:
    if kind == "Service":
        return view.core.read_namespaced_service(name, view.namespace)
    return view.apps.read_namespaced_deployment(name, view.namespace)


def untouched(obj: Any) -> dict[str, Any]:
    """What aliasop would have changed of a Service or Deployment had it taken it."""
    selector = obj.spec.selector
    return {
        "uid": obj.metadata.uid,
        "owners": obj.metadata.owner_references,
        "labels": obj.metadata.labels,
        "selector": selector if isinstance(selector, dict) else selector.match_labels,
        "generation": obj.metadata.generation,
        "written by aliasop": any(
            m.manager.startswith("aliasop") for m in obj.metadata.managed_fields or []
        ),
    }


def wait_clash(view: View, prefix: str) -> dict[str, Any]:
    """The NameClash in status (Degraded and Stalled, its message starting with `prefix`) and
    as a Warning Event."""

    def clash() -> dict[str, Any] | None:
        status = view.status()
        return status if status.get("message", "").startswith(prefix) else None

    status = wait_for(clash, 60, message=f"{view.name}: {prefix}")
    assert status["phase"] == "Degraded"
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["Stalled"] == conditions["Degraded"] == ("True", "NameClash")
    wait_for(lambda: "NameClash" in view.events(), 30, message="the NameClash Event")
    return status


def delete_and_collect(view: View) -> None:
    """Delete the ModelDeployment and wait until the garbage collector has dealt with its
    dependents: a ConfigMap it owns (a marker) is gone."""
    mdep = view.mdep()
    owner = client.V1OwnerReference(
        api_version="aliasop.io/v1alpha1",
        kind="ModelDeployment",
        name=view.name,
        uid=mdep["metadata"]["uid"],
    )
    marker = f"{view.name}-collected"
    view.core.create_namespaced_config_map(
        view.namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name=marker, owner_references=[owner])),
    )
    view.custom.delete_namespaced_custom_object(
        "aliasop.io", "v1alpha1", view.namespace, "modeldeployments", view.name
    )

    def collected() -> bool:
        try:
            view.core.read_namespaced_config_map(marker, view.namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait_for(collected, 60, message=f"the garbage collector done with {view.name}")


@pytest.mark.parametrize("kind", ["Service", "Deployment"])
def test_an_object_made_by_hand_is_left_as_it_was_and_the_clash_reported(
    kind: str,
    two_versions: Versions,
    model_name: str,
    mdeps: Callable[..., Any],
    view: Callable[[str], View],
) -> None:
    web = view("web")
    if kind == "Service":
        foreign_service(web.core, web.namespace, "web")
    else:
        foreign_deployment(web.apps, web.namespace, "web")
    before = untouched(read(web, kind, "web"))

    mdeps("web", model=f"models:/{model_name}@champion", replicas=1, pollIntervalSeconds=5)
    status = wait_clash(web, f"the {kind} web exists and belongs to no owner")
    assert f"{ADOPT}=web" in status["message"]  # the way to hand it over, named
    assert untouched(read(web, kind, "web")) == before
    if kind == "Service":
        assert web.deployment() is None  # nothing at all applied while the name is taken

    delete_and_collect(web)
    assert untouched(read(web, kind, "web")) == before


def test_a_modeldeployment_named_like_a_side_service_never_takes_it(
    two_versions: Versions,
    model_name: str,
    mdeps: Callable[..., Any],
    view: Callable[[str], View],
) -> None:
    """`bikes-stable` (a ModelDeployment) beside `bikes` (Canary strategy), whose stable-side
    Service is named `bikes-stable`: the Service stays bikes', and bikes keeps serving."""
    uri = f"models:/{model_name}@champion"
    canary = {"strategy": "Canary", "steps": [{"setWeight": 50}]}
    mdeps("bikes", model=uri, replicas=2, pollIntervalSeconds=5, rollout=canary)
    bikes_view = view("bikes")
    bikes_view.wait_serving(two_versions[0].version)
    before = untouched(read(bikes_view, "Service", "bikes-stable"))
    assert [o.name for o in before["owners"]] == ["bikes"]

    mdeps("bikes-stable", model=uri, replicas=1, pollIntervalSeconds=5)
    neighbour = view("bikes-stable")
    wait_clash(
        neighbour,
        "the Service bikes-stable exists and belongs to another owner (ModelDeployment bikes)",
    )
    assert untouched(read(bikes_view, "Service", "bikes-stable")) == before
    assert bikes_view.status()["phase"] == "Ready"

    delete_and_collect(neighbour)
    assert untouched(read(bikes_view, "Service", "bikes-stable")) == before


def test_the_adopt_annotation_hands_a_service_made_by_hand_over(
    two_versions: Versions,
    model_name: str,
    mdeps: Callable[..., Any],
    view: Callable[[str], View],
) -> None:
    """docs/migrating.md: the Service keeps its uid (and ClusterIP) and the port it had;
    aliasop sets its selector and owns it from then on."""
    web = view("web")
    made = foreign_service(web.core, web.namespace, "web", annotations={ADOPT: "web"})

    mdep = mdeps("web", model=f"models:/{model_name}@champion", replicas=1, pollIntervalSeconds=5)
    web.wait_serving(two_versions[0].version)
    taken = read(web, "Service", "web")
    assert (taken.metadata.uid, taken.spec.cluster_ip) == (made.metadata.uid, made.spec.cluster_ip)
    assert [(o.uid, o.controller) for o in taken.metadata.owner_references] == [
        (mdep["metadata"]["uid"], True)
    ]
    assert taken.spec.selector == ALIASOP_SELECTOR  # replaced whole: a selector is one field
    assert {p.name for p in taken.spec.ports} == {"legacy", "http"}

    delete_and_collect(web)  # aliasop's now: it goes with its ModelDeployment
    with pytest.raises(client.ApiException) as gone:
        read(web, "Service", "web")
    assert gone.value.status == 404


def test_children_left_by_an_orphaning_delete_are_taken_only_when_handed_over(
    two_versions: Versions,
    model_name: str,
    mdeps: Callable[..., Any],
    view: Callable[[str], View],
) -> None:
    """`kubectl delete mdep web --cascade=orphan` leaves a Deployment and a Service with no
    owner: a new `web` takes them only once they are annotated, without restarting a pod."""
    uri = f"models:/{model_name}@champion"
    mdeps("web", model=uri, replicas=1, pollIntervalSeconds=5)
    web = view("web")
    web.wait_serving(two_versions[0].version)
    web.custom.delete_namespaced_custom_object(
        "aliasop.io",
        "v1alpha1",
        web.namespace,
        "modeldeployments",
        "web",
        propagation_policy="Orphan",
    )

    def gone() -> bool:
        try:
            web.mdep()
        except client.ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait_for(gone, 60, message="web deleted, its children orphaned")
    assert not read(web, "Deployment", "web").metadata.owner_references
    replica_sets = {rs.metadata.uid for rs in web.replica_sets()}
    deployment_uid = read(web, "Deployment", "web").metadata.uid

    mdep = mdeps("web", model=uri, replicas=1, pollIntervalSeconds=5)
    wait_clash(web, "the Deployment web exists and belongs to no owner")
    for kind, plural in (("Deployment", "deployment"), ("Service", "service")):
        assert not read(web, kind, "web").metadata.owner_references
        patch = getattr(
            web.apps if kind == "Deployment" else web.core, f"patch_namespaced_{plural}"
        )
        patch("web", web.namespace, {"metadata": {"annotations": {ADOPT: "web"}}})

    web.wait_serving(two_versions[0].version)
    for kind in ("Deployment", "Service"):
        taken = read(web, kind, "web")
        assert [o.uid for o in taken.metadata.owner_references] == [mdep["metadata"]["uid"]]
    assert read(web, "Deployment", "web").metadata.uid == deployment_uid
    assert {rs.metadata.uid for rs in web.replica_sets()} == replica_sets  # no new rollout


def ready_endpoints(k8s: client.ApiClient, namespace: str, service: str) -> int:
    slices = client.DiscoveryV1Api(k8s).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}"
    )
    return sum(
        1
        for endpoint_slice in slices.items
        for endpoint in endpoint_slice.endpoints or []
        if endpoint.conditions is not None and endpoint.conditions.ready
    )


def test_hand_made_serving_moves_to_aliasop_as_docs_migrating_says_without_a_gap(
    two_versions: Versions,
    model_name: str,
    k8s: client.ApiClient,
    namespace: str,
    mdeps: Callable[..., Any],
) -> None:
    """docs/migrating.md, step by step: the Service `web` always has a ready endpoint, from
    the hand-made pods to aliasop's."""
    web = View(k8s, namespace, "web")
    hand_made = {"app": "web"}
    web.apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels=hand_made),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=hand_made),
                    spec=client.V1PodSpec(
                        containers=[
                            client.V1Container(
                                name="web",
                                image="registry.invalid/web:1",
                                ports=[client.V1ContainerPort(name="http", container_port=8080)],
                            )
                        ]
                    ),
                ),
            ),
        ),
    )
    service = client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(
            selector=hand_made,
            ports=[client.V1ServicePort(name="http", port=80, target_port=8080)],
        ),
    )
    made = web.core.create_namespaced_service(namespace, service)
    wait_for(lambda: ready_endpoints(k8s, namespace, "web") == 2, 60, message="web serving")

    counts: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            counts.append(ready_endpoints(k8s, namespace, "web"))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        # 1. Let the Deployment go, keep its pods.
        web.apps.delete_namespaced_deployment("web", namespace, propagation_policy="Orphan")
        # 2. The Service finds the old pods by aliasop's selector too.
        for pod in web.core.list_namespaced_pod(namespace, label_selector="app=web").items:
            web.core.patch_namespaced_pod(
                pod.metadata.name, namespace, {"metadata": {"labels": ALIASOP_SELECTOR}}
            )
        # 3. Room for aliasop's port; 4. the handover, then the ModelDeployment.
        rename = [{"op": "replace", "path": "/spec/ports/0/name", "value": "legacy"}]
        web.core.patch_namespaced_service("web", namespace, rename)  # a JSON patch, as documented
        web.core.patch_namespaced_service(
            "web", namespace, {"metadata": {"annotations": {ADOPT: "web"}}}
        )
        mdeps("web", model=f"models:/{model_name}@champion", replicas=2, pollIntervalSeconds=5)
        web.wait_serving(two_versions[0].version)
        # 5. Retire the old pods.
        web.apps.delete_collection_namespaced_replica_set(namespace, label_selector="app=web")
        wait_for(
            lambda: not web.core.list_namespaced_pod(namespace, label_selector="app=web").items,
            60,
            message="the hand-made pods gone",
        )
        wait_for(lambda: ready_endpoints(k8s, namespace, "web") == 2, 60, message="aliasop's")
    finally:
        stop.set()
        sampler.join(timeout=5)

    assert counts and min(counts) >= 1, f"the Service had no ready endpoint: {counts}"
    taken = web.core.read_namespaced_service("web", namespace)
    assert taken.metadata.uid == made.metadata.uid
    assert taken.spec.selector == ALIASOP_SELECTOR
    assert taken.metadata.owner_references[0].name == "web"
