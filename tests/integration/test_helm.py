"""The Helm chart charts/aliasop, with the real helm CLI (tests/tools/build.sh builds it from
helm.sh/helm/v3): it lints, renders what the API server accepts for several value sets, is
what manifests/ holds, installs, and a namespaced install's operator follows its namespaces
and is refused (403) elsewhere."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from aliasop.sharding import lease_name
from aliasop_dev import chart, local

from resources import Versions, View
from support import REPO, SHARD_LABEL, TEST_NAMESPACE_PREFIX, Cluster

CHART = REPO / "charts" / "aliasop"
# Resources that an operator process of this module follows carry SHARD_LABEL: SHARD, and
# that process follows only them; the session's operator (conftest) follows none of them.
SHARD = "helm"

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    """Run the helm built by tests/tools/build.sh with its state in a temporary directory;
    returns its output."""
    binary = chart.default_helm()
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run `make tools-build`")
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }

    def run(*args: str) -> str:
        done = subprocess.run(
            [str(binary), *args], capture_output=True, text=True, timeout=120, env=env
        )
        assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    return run


@pytest.fixture
def namespaces(k8s: client.ApiClient) -> Iterator[Callable[[str], str]]:
    """Create fresh namespaces (`namespaces("ops")`), deleted when the test ends."""
    core = client.CoreV1Api(k8s)
    created: list[str] = []

    def create(role: str) -> str:
        name = f"{TEST_NAMESPACE_PREFIX}helm-{role}-{uuid.uuid4().hex[:6]}"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        created.append(name)
        return name

    yield create
    for name in created:
        core.delete_namespace(name)


def set_args(values: dict[str, str]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def template(helm: Callable[..., str], release: str, namespace: str, *args: str) -> list[Manifest]:
    """What `helm install` applies (the `helm test` pod is only created by `helm test`)."""
    rendered = helm(
        "template", release, str(CHART), "--namespace", namespace, "--skip-tests", *args
    )
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def by_kind(manifests: list[Manifest]) -> dict[str, list[Manifest]]:
    kinds: dict[str, list[Manifest]] = {}
    for manifest in manifests:
        kinds.setdefault(manifest["kind"], []).append(manifest)
    return kinds


def operator_container(manifests: list[Manifest]) -> dict[str, Any]:
    (deployment,) = by_kind(manifests)["Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def release_name() -> str:
    return f"t-helm-{uuid.uuid4().hex[:6]}"


def test_manifests_are_the_chart_rendered_with_its_defaults() -> None:
    """manifests/aliasop.yaml (kubectl apply -k manifests/) is what the chart renders: one
    source, two ways to install."""
    helm = chart.default_helm()
    if not helm.is_file():
        pytest.fail(f"{helm} is missing: run `make tools-build`")
    committed = chart.MANIFESTS.read_text()
    assert committed == chart.render_manifests(helm), "manifests/ is stale: run `make manifests`"
    kustomization = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["namespace.yaml", "aliasop.yaml"]


VALUE_SETS: dict[str, dict[str, str]] = {
    "defaults": {},
    "leader-election-off": {"leaderElection.enabled": "false"},
    "extras": {"networkPolicy.enabled": "true", "serviceMonitor.enabled": "true"},
    "network-policy-from": {
        "networkPolicy.enabled": "true",
        "networkPolicy.from[0].namespaceSelector.matchLabels.team": "mlflow",
    },
    "sharded": {"watchLabelSelector": "aliasop.io/shard=a"},
    "tenancy": {
        "registryWriteGrants.fraud[0]": "fraud-*",
        "analysisAllowedHosts[0]": "prometheus.monitoring:9090",
        "networkPolicy.enabled": "true",
        "networkPolicy.egress.analysis.ports[0]": "9090",
        "networkPolicy.egress.analysis.to[0].namespaceSelector.matchLabels.team": "monitoring",
    },
    "namespaced": {"watchNamespaces": "{a,b}"},
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint(helm: Callable[..., str], values: dict[str, str]) -> None:
    helm("lint", "--strict", str(CHART), *set_args(values))


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("values", "refusal"),
    [
        ({"watchNamespace": "a"}, "additional properties 'watchNamespace' not allowed"),
        ({"replicaCount": "two"}, "/replicaCount': got string, want integer"),
        ({"watchNamespaces": "{Team_A}"}, "/watchNamespaces/0"),
    ],
    ids=["misspelt", "not-a-number", "not-a-namespace"],
)
def test_values_schema_refuses_mistakes(
    helm: Callable[..., str], values: dict[str, str], refusal: str
) -> None:
    """values.schema.json: a misspelt or mistyped value fails the install, rather than
    being ignored (a misspelt watchNamespaces would install a cluster-wide operator)."""
    with pytest.raises(AssertionError, match=re.escape(refusal)):
        helm("template", "r", str(CHART), *set_args(values))


def dry_run(cluster: Cluster, manifests: list[Manifest]) -> str:
    """`kubectl apply --dry-run=server`: the API server validates and admits every object
    (schemas, RBAC's own escalation checks, PDB and NetworkPolicy validation) and stores
    nothing."""
    answer = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(manifests), check=False
    )
    assert answer.returncode == 0, answer.stderr
    return answer.stdout


@pytest.mark.timeout(120)
def test_defaults_cluster_wide_with_leader_election(
    helm: Callable[..., str], cluster: Cluster, namespaces: Callable[[str], str]
) -> None:
    ops = namespaces("ops")
    release = release_name()
    manifests = template(helm, release, ops)
    kinds = by_kind(manifests)
    assert sorted(kinds) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    # Cluster-scoped objects are named after the release: installs do not collide.
    assert {m["metadata"]["name"] for m in kinds["ClusterRole"] + kinds["ClusterRoleBinding"]} == {
        f"{release}-aliasop"
    }
    (deployment,) = kinds["Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = spec["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = operator_container(manifests)
    assert container["args"] == [
        "run",
        "--all-namespaces",
        "--liveness=http://0.0.0.0:8080/healthz",
    ]
    env = {e["name"]: e for e in container["env"]}
    assert env["ALIASOP_LEADER_ELECT"]["value"] == "true"
    for name, field in [
        ("ALIASOP_LEADER_ELECT_NAMESPACE", "metadata.namespace"),
        ("ALIASOP_LEADER_ELECT_IDENTITY", "metadata.name"),
        ("ALIASOP_ADVERTISE_ADDRESS", "status.podIP"),
    ]:
        assert env[name]["valueFrom"]["fieldRef"]["fieldPath"] == field
    # The operator's default Lease name, `aliasop`, which the Role grants, and nothing else.
    assert env["ALIASOP_LEADER_ELECT_LEASE_NAME"]["value"] == lease_name("") == "aliasop"
    assert "ALIASOP_WATCH_LABEL_SELECTOR" not in env
    (lease_role,) = kinds["Role"]
    assert lease_role["metadata"]["namespace"] == ops
    assert lease_role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["aliasop"],
            "verbs": ["get", "update"],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    (pdb,) = kinds["PodDisruptionBudget"]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == spec["selector"]
    dry_run(cluster, manifests)


@pytest.mark.timeout(120)
def test_leader_election_off_runs_one_replica_recreated(
    helm: Callable[..., str], cluster: Cluster, namespaces: Callable[[str], str]
) -> None:
    manifests = template(
        helm, release_name(), namespaces("ops"), *set_args(VALUE_SETS["leader-election-off"])
    )
    kinds = by_kind(manifests)
    (deployment,) = kinds["Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    # No Lease, no PodDisruptionBudget (with one replica it would block every drain).
    assert "Role" not in kinds and "PodDisruptionBudget" not in kinds
    env = {e["name"] for e in operator_container(manifests)["env"]}
    assert not {n for n in env if n.startswith("ALIASOP_LEADER_ELECT")}
    dry_run(cluster, manifests)


@pytest.mark.timeout(120)
def test_network_policy_and_service_monitor(
    helm: Callable[..., str], cluster: Cluster, namespaces: Callable[[str], str]
) -> None:
    """Both only when enabled. The ServiceMonitor's CRD (Prometheus Operator) is not on the
    test cluster, and a stand-in CRD would validate nothing of its own: so every other object
    goes through the API server, and the ServiceMonitor's shape is checked against the
    Service it scrapes."""
    ops = namespaces("ops")
    assert "ServiceMonitor" not in by_kind(template(helm, release_name(), ops))
    manifests = template(helm, release_name(), ops, *set_args(VALUE_SETS["extras"]))
    kinds = by_kind(manifests)
    (policy,) = kinds["NetworkPolicy"]
    (deployment,) = kinds["Deployment"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["podSelector"]["matchLabels"] == selector
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9090}, {"protocol": "TCP", "port": 8080}]
    assert "from" not in rule  # from anywhere: MLflow, Prometheus, the other replica
    ports = {p["name"]: p["containerPort"] for p in operator_container(manifests)["ports"]}
    assert ports == {"http": 9090, "health": 8080}
    # Out: the API server and MLflow on their ports, DNS to kube-dns, the other replicas'
    # HTTP port; no analysis rule while analysisAllowedHosts has no ports there.
    api_server, mlflow, dns, replicas = policy["spec"]["egress"]
    assert api_server == {"ports": [{"protocol": "TCP", "port": p} for p in (443, 6443)]}
    assert mlflow == {"ports": [{"protocol": "TCP", "port": 5000}]}
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert replicas["to"] == [{"podSelector": {"matchLabels": selector}}]

    (monitor,) = kinds["ServiceMonitor"]
    (service,) = kinds["Service"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == ops
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [ops]}
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    dry_run(cluster, [m for m in manifests if m["kind"] != "ServiceMonitor"])


@pytest.mark.timeout(120)
def test_write_grants_analysis_hosts_and_their_egress(
    helm: Callable[..., str], cluster: Cluster, namespaces: Callable[[str], str]
) -> None:
    """The operator gets the grants and the analysis hosts as JSON, and the NetworkPolicy lets
    analysis out to the peers and ports given for those hosts."""
    values = set_args(VALUE_SETS["tenancy"])
    manifests = template(helm, release_name(), namespaces("ops"), *values)
    env = {e["name"]: e.get("value") for e in operator_container(manifests)["env"]}
    assert json.loads(env["ALIASOP_REGISTRY_WRITE_GRANTS"]) == {"fraud": ["fraud-*"]}
    assert json.loads(env["ALIASOP_ANALYSIS_ALLOWED_HOSTS"]) == ["prometheus.monitoring:9090"]
    (policy,) = by_kind(manifests)["NetworkPolicy"]
    analysis = {
        "ports": [{"protocol": "TCP", "port": 9090}],
        "to": [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}],
    }
    assert analysis in policy["spec"]["egress"]
    defaults = template(helm, release_name(), namespaces("ops"))
    names = {e["name"] for e in operator_container(defaults)["env"]}
    assert not names & {"ALIASOP_REGISTRY_WRITE_GRANTS", "ALIASOP_ANALYSIS_ALLOWED_HOSTS"}
    dry_run(cluster, manifests)


@pytest.mark.timeout(120)
def test_a_network_policy_naming_peers_still_lets_the_replicas_reach_each_other(
    helm: Callable[..., str], cluster: Cluster, namespaces: Callable[[str], str]
) -> None:
    """A standby forwards webhook deliveries to the leader's pod (aliasop.endpoints): the
    release's own pods reach each other's HTTP port, whatever `from` lets in."""
    values = set_args(VALUE_SETS["network-policy-from"])
    manifests = template(helm, release_name(), namespaces("ops"), *values)
    kinds = by_kind(manifests)
    (policy,) = kinds["NetworkPolicy"]
    (deployment,) = kinds["Deployment"]
    named, replicas = policy["spec"]["ingress"]
    assert named["from"] == [{"namespaceSelector": {"matchLabels": {"team": "mlflow"}}}]
    assert replicas == {
        "ports": [{"protocol": "TCP", "port": 9090}],
        "from": [{"podSelector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]}}],
    }
    dry_run(cluster, manifests)


@pytest.mark.timeout(120)
def test_sharded_release_has_a_lease_of_its_own(
    helm: Callable[..., str], cluster: Cluster, namespaces: Callable[[str], str]
) -> None:
    manifests = template(helm, release_name(), namespaces("ops"), *set_args(VALUE_SETS["sharded"]))
    env = {e["name"]: e.get("value") for e in operator_container(manifests)["env"]}
    assert env["ALIASOP_WATCH_LABEL_SELECTOR"] == "aliasop.io/shard=a"
    # The name the operator itself gives a shard's Lease, passed on explicitly: the Role
    # below grants exactly the name the operator is told.
    lease = env["ALIASOP_LEADER_ELECT_LEASE_NAME"]
    assert lease == lease_name("aliasop.io/shard=a")
    (lease_role,) = by_kind(manifests)["Role"]
    assert lease_role["rules"][0]["resourceNames"] == [lease]
    dry_run(cluster, manifests)


@pytest.mark.timeout(180)
def test_helm_install_creates_the_objects(
    helm: Callable[..., str], installed: Cluster, namespaces: Callable[[str], str]
) -> None:
    """`helm install` of the defaults into a fresh namespace, next to the session's
    `kubectl apply -k manifests/` install (fixture `installed`): the chart's CRD is already
    there (helm leaves an existing CRD alone), the cluster-scoped names do not collide."""
    ops = namespaces("ops")
    release = release_name()
    helm("install", release, str(CHART), "--namespace", ops, "--kubeconfig", installed.kubeconfig)
    try:
        name = f"{release}-aliasop"
        for kind, namespace in [
            ("deployment", ops),
            ("service", ops),
            ("serviceaccount", ops),
            ("poddisruptionbudget", ops),
            ("role", ops),
            ("rolebinding", ops),
            ("clusterrole", None),
            ("clusterrolebinding", None),
        ]:
            suffix = "-leader-election" if kind in ("role", "rolebinding") else ""
            where = ["-n", namespace] if namespace else []
            installed.kubectl("get", kind, name + suffix, *where)
        status = helm("status", release, "--namespace", ops, "--kubeconfig", installed.kubeconfig)
        assert "STATUS: deployed" in status
    finally:
        helm("uninstall", release, "--namespace", ops, "--kubeconfig", installed.kubeconfig)
    gone = installed.kubectl("get", "clusterrole", f"{release}-aliasop", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr


def resolve_env(container: dict[str, Any], pod: dict[str, str]) -> dict[str, str]:
    """The container's env as the kubelet gives it to the process: literal values, and the
    downward API's fields from `pod`. Secret references are left out (their Secrets are
    optional and absent here)."""
    env: dict[str, str] = {}
    for variable in container.get("env") or []:
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        elif "fieldRef" in variable.get("valueFrom", {}):
            env[variable["name"]] = pod[variable["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


@pytest.mark.timeout(300)
def test_namespaced_install_follows_its_namespaces_and_is_refused_elsewhere(
    helm: Callable[..., str],
    installed: Cluster,
    namespaces: Callable[[str], str],
    mlflow_uri: str,
    model_name: str,
    two_versions: Versions,
    tmp_path: Path,
) -> None:
    """`helm install` with two watched namespaces: a Role per namespace, no ClusterRole. The
    real operator runs with the installed ServiceAccount's token and exactly the args and env
    the chart renders (the pod's downward-API fields filled in): it makes a ModelDeployment
    in a watched namespace serve, leaves one elsewhere alone, and the API server answers its
    ServiceAccount 403 outside its namespaces."""
    ops, watched, also_watched, elsewhere = (
        namespaces(role) for role in ("ops", "a", "b", "other")
    )
    release = release_name()
    health_port, http_port = local.free_port(), local.free_port()
    values = {
        "watchNamespaces": f"{{{watched},{also_watched}}}",
        "watchLabelSelector": f"{SHARD_LABEL}={SHARD}",
        "trackingUri": mlflow_uri,
        "ports.health": str(health_port),
        "ports.http": str(http_port),
    }
    kubeconfig = ["--kubeconfig", installed.kubeconfig]
    manifests = template(helm, release, ops, *set_args(values))
    kinds = by_kind(manifests)
    # Cluster-wide, only kopf's scan: list and watch CRDs and namespaces.
    (scan,) = kinds["ClusterRole"]
    assert scan["metadata"]["name"] == f"{release}-aliasop-scan"
    assert [(r["resources"], r["verbs"]) for r in scan["rules"]] == [
        (["customresourcedefinitions"], ["list", "watch"]),
        (["namespaces"], ["list", "watch"]),
    ]
    assert {
        (m["metadata"]["namespace"], m["metadata"]["name"])
        for m in kinds["Role"]
        if m["rules"][0]["apiGroups"] == ["aliasop.io"]
    } == {(watched, f"{release}-aliasop"), (also_watched, f"{release}-aliasop")}
    container = operator_container(manifests)
    assert container["args"][1:3] == [f"--namespace={watched}", f"--namespace={also_watched}"]
    dry_run(installed, manifests)

    helm("install", release, str(CHART), "--namespace", ops, *set_args(values), *kubeconfig)
    operator: local.LocalProcess | None = None
    try:
        account = f"{release}-aliasop"
        token_kubeconfig = local.service_account_kubeconfig(
            [installed.kubectl_binary, *kubeconfig], ops, account, tmp_path / "kubeconfig"
        )
        as_operator = client.CustomObjectsApi(
            config.new_client_from_config(config_file=str(token_kubeconfig))
        )
        group = ("aliasop.io", "v1alpha1")
        as_operator.list_namespaced_custom_object(*group, watched, "modeldeployments")
        for refused in (
            lambda: as_operator.list_namespaced_custom_object(
                *group, elsewhere, "modeldeployments"
            ),
            lambda: as_operator.list_cluster_custom_object(*group, "modeldeployments"),
        ):
            with pytest.raises(ApiException) as answer:
                refused()
            assert answer.value.status == 403, answer.value

        # The operator as the chart runs it.
        pod = {
            "metadata.namespace": ops,
            "metadata.name": f"{release}-aliasop-local",
            "status.podIP": "127.0.0.1",
        }
        env = resolve_env(container, pod)
        assert env["ALIASOP_LEADER_ELECT"] == "true"
        operator = local.LocalProcess(
            name="aliasop operator (helm, namespaced)",
            args=[str(Path(sys.executable).parent / "aliasop"), *container["args"]],
            log=tmp_path / "operator.log",
            env={
                **env,
                "KUBECONFIG": str(token_kubeconfig),
                "ALIASOP_STATUS_REFRESH_SECONDS": "0",
            },
        ).start()
        operator.wait_ready(f"http://127.0.0.1:{health_port}/healthz", timeout=60)

        k8s = config.new_client_from_config(config_file=installed.kubeconfig)
        mine = {SHARD_LABEL: SHARD}
        for namespace in (watched, elsewhere):
            client.CustomObjectsApi(k8s).create_namespaced_custom_object(
                *group,
                namespace,
                "modeldeployments",
                {
                    "apiVersion": "aliasop.io/v1alpha1",
                    "kind": "ModelDeployment",
                    "metadata": {"name": "bikes", "namespace": namespace, "labels": mine},
                    "spec": {
                        "model": f"models:/{model_name}@champion",
                        "replicas": 1,
                        "pollIntervalSeconds": 5,
                    },
                },
            )
        # Within seconds: kopf's scan is allowed, so it does not retry for a minute first.
        View(k8s, watched, "bikes").wait_serving(two_versions[0].version, timeout=30)
        assert View(k8s, elsewhere, "bikes").status() == {}
        # It leads on the Lease the chart named and its Role grants, in the release namespace.
        lease = client.CoordinationV1Api(k8s).read_namespaced_lease(
            env["ALIASOP_LEADER_ELECT_LEASE_NAME"], ops
        )
        assert lease.spec.holder_identity == pod["metadata.name"]
        assert "cannot" not in operator.output(), operator.tail(40)
    finally:
        if operator is not None:
            operator.stop()
            print(f"--- operator log tail ---\n{operator.tail(60)}")
        helm("uninstall", release, "--namespace", ops, *kubeconfig)
