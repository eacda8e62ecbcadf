"""Smoke tests proving the test cluster is a real control plane: Deployments roll out through the
real controllers and scheduler onto the kwok node, and RBAC is enforced for ServiceAccounts."""

from __future__ import annotations

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from support import Cluster, wait_for

# func_only: the first test must not spend its budget on starting the session's cluster.
pytestmark = pytest.mark.timeout(120, func_only=True)

APP = "smoke"


def deployment(image: str, replicas: int = 2) -> client.V1Deployment:
    labels = {"app": APP}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=APP),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name=APP, image=image)]),
            ),
        ),
    )


def rolled_out(apps: client.AppsV1Api, namespace: str, replicas: int = 2) -> bool:
    """The Deployment's current generation is fully rolled out and available."""
    d = apps.read_namespaced_deployment(APP, namespace)
    s = d.status
    return (
        s.observed_generation == d.metadata.generation
        and s.updated_replicas == replicas
        and s.available_replicas == replicas
        and (s.replicas or 0) == replicas
    )


def replica_sets(apps: client.AppsV1Api, namespace: str) -> dict[str, client.V1ReplicaSet]:
    items = apps.list_namespaced_replica_set(namespace, label_selector=f"app={APP}").items
    return {rs.metadata.name: rs for rs in items}


def test_deployment_becomes_available(k8s: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(k8s)
    apps.create_namespaced_deployment(namespace, deployment("registry.k8s.io/pause:3.10"))

    wait_for(lambda: rolled_out(apps, namespace), timeout=90, message="deployment 2/2 available")

    pods = client.CoreV1Api(k8s).list_namespaced_pod(namespace, label_selector=f"app={APP}").items
    assert len(pods) == 2
    # Scheduled by kube-scheduler onto the kwok node, made Running/Ready by kwok's pod stages.
    assert {p.spec.node_name for p in pods} == {"aliasop-node-0"}
    assert all(p.status.phase == "Running" for p in pods)


def test_pod_template_change_rolls_out_new_replica_set(
    k8s: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(k8s)
    apps.create_namespaced_deployment(namespace, deployment("registry.k8s.io/pause:3.10"))
    wait_for(lambda: rolled_out(apps, namespace), timeout=90, message="first rollout")
    [old] = replica_sets(apps, namespace)

    patch = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": APP, "image": "registry.k8s.io/pause:3.9"}]}
            }
        }
    }
    apps.patch_namespaced_deployment(APP, namespace, patch)
    wait_for(lambda: rolled_out(apps, namespace), timeout=90, message="second rollout")

    def old_scaled_down() -> bool:
        rs = replica_sets(apps, namespace)[old]
        return rs.spec.replicas == 0 and not rs.status.replicas

    wait_for(old_scaled_down, timeout=60, message=f"old ReplicaSet {old} scaled to 0")
    sets = replica_sets(apps, namespace)
    [new] = set(sets) - {old}
    assert sets[new].spec.replicas == 2
    assert sets[new].status.ready_replicas == 2
    assert sets[new].spec.template.spec.containers[0].image == "registry.k8s.io/pause:3.9"
    assert sets[new].metadata.annotations["deployment.kubernetes.io/revision"] == "2"


def service_account_client(
    cluster: Cluster, k8s: client.ApiClient, namespace: str, sa: str
) -> client.ApiClient:
    """An API client authenticated only by a TokenRequest token of ServiceAccount `sa`."""
    core = client.CoreV1Api(k8s)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=sa))
    )
    token = core.create_namespaced_service_account_token(
        sa,
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
        ),
    ).status.token
    admin = client.Configuration()
    config.load_kube_config(config_file=cluster.kubeconfig, client_configuration=admin)
    conf = client.Configuration(host=admin.host, api_key={"authorization": token})
    conf.api_key_prefix = {"authorization": "Bearer"}
    conf.ssl_ca_cert = admin.ssl_ca_cert  # verify the server; no client certificate
    return client.ApiClient(conf)


def test_rbac_refuses_service_account_without_rights(
    cluster: Cluster, k8s: client.ApiClient, namespace: str
) -> None:
    rbac = client.RbacAuthorizationV1Api(k8s)
    rbac.create_namespaced_role(
        namespace,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="pod-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="reader-reads-pods"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"
            ),
            subjects=[
                client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)
            ],
        ),
    )
    nobody = client.CoreV1Api(service_account_client(cluster, k8s, namespace, "nobody"))
    reader = client.CoreV1Api(service_account_client(cluster, k8s, namespace, "reader"))

    with pytest.raises(ApiException) as refused:
        nobody.list_namespaced_pod(namespace)
    assert refused.value.status == 403
    assert f"system:serviceaccount:{namespace}:nobody" in refused.value.body

    def reader_allowed() -> bool:
        try:
            reader.list_namespaced_pod(namespace)
        except ApiException as e:
            if e.status != 403:  # the RBAC authorizer may not have seen the binding yet
                raise
            return False
        return True

    wait_for(reader_allowed, timeout=30, message="bound ServiceAccount may list pods")
    # The Role grants pods in this namespace only.
    with pytest.raises(ApiException) as outside:
        reader.list_namespaced_pod("default")
    assert outside.value.status == 403
