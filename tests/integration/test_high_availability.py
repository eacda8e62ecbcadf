"""Two operator replicas with a leader Lease, a client that survives its token, and shards.

Each test runs operator processes of its own, on a shard of its own (a label the session's
operator leaves alone), with short Lease timings: lease 4 s, renew deadline 3 s, retry 0.5 s.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from aliasop.builders import VERSION_LABEL
from aliasop.sharding import lease_name
from aliasop_dev import bikes, local

from resources import OPERATOR_NAMESPACE, WEBHOOK_SECRET, Follower, Versions, View, counts_by
from support import SHARD_LABEL, Cluster, wait_for

LEASE_SECONDS = 4.0
TIMINGS = {
    "ALIASOP_LEADER_ELECT_LEASE_DURATION_SECONDS": str(LEASE_SECONDS),
    "ALIASOP_LEADER_ELECT_RENEW_DEADLINE_SECONDS": "3",
    "ALIASOP_LEADER_ELECT_RETRY_PERIOD_SECONDS": "0.5",
}


class Replicas:
    """Operator processes of one shard, by identity, and its Lease."""

    def __init__(
        self, k8s: client.ApiClient, kubeconfig: str, mlflow_uri: str, workdir: Path
    ) -> None:
        self.coordination = client.CoordinationV1Api(k8s)
        self.kubeconfig, self.mlflow_uri, self.workdir = kubeconfig, mlflow_uri, workdir
        self.shard = f"ha-{uuid.uuid4().hex[:6]}"
        self.selector = f"{SHARD_LABEL}={self.shard}"
        self.lease = lease_name(self.selector)
        self.processes: dict[str, local.LocalProcess] = {}
        self.rbac = client.RbacAuthorizationV1Api(k8s)
        self._grant_lease()

    def _grant_lease(self) -> None:
        """The shipped Role lets the ServiceAccount read and renew Lease `aliasop` only (the
        chart's Role names its release's Lease). A shard is a release of its own, with a Role
        for its Lease; this shard runs on the session's ServiceAccount, so it grants that
        ServiceAccount its Lease the same way, until stop()."""
        name = f"aliasop-test-{self.shard}"
        self.rbac.create_namespaced_role(
            OPERATOR_NAMESPACE,
            {
                "metadata": {"name": name},
                "rules": [
                    {
                        "apiGroups": ["coordination.k8s.io"],
                        "resources": ["leases"],
                        "resourceNames": [self.lease],
                        "verbs": ["get", "update"],
                    }
                ],
            },
        )
        self.rbac.create_namespaced_role_binding(
            OPERATOR_NAMESPACE,
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [
                    {"kind": "ServiceAccount", "name": "aliasop", "namespace": OPERATOR_NAMESPACE}
                ],
            },
        )

    def start(self, identity: str, leader_elect: bool = True, **env: str) -> local.LocalProcess:
        health = local.free_port()
        process = local.operator(
            self.workdir / f"{identity}.log",
            env.pop("KUBECONFIG", self.kubeconfig),
            self.mlflow_uri,
            health,
            webhook_secret=WEBHOOK_SECRET,
        )
        process.env.update(
            ALIASOP_WATCH_LABEL_SELECTOR=self.selector,
            ALIASOP_LEADER_ELECT=str(leader_elect).lower(),
            ALIASOP_LEADER_ELECT_NAMESPACE=OPERATOR_NAMESPACE,
            ALIASOP_LEADER_ELECT_IDENTITY=identity,
            ALIASOP_ADVERTISE_ADDRESS="127.0.0.1",
            **TIMINGS,
            **env,
        )
        self.processes[identity] = process.start()
        process.wait_ready(f"http://127.0.0.1:{health}/healthz", timeout=60)
        return process

    def holder(self) -> str | None:
        try:
            lease = self.coordination.read_namespaced_lease(self.lease, OPERATOR_NAMESPACE)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        holder: str | None = lease.spec.holder_identity
        return holder

    def wait_leader(self, other_than: str | None = None, timeout: float = 30) -> str:
        def leader() -> str | None:
            holder = self.holder()
            return holder if holder in self.processes and holder != other_than else None

        return wait_for(leader, timeout, interval=0.1, message=f"a leader of {self.lease}")

    def stop(self) -> None:
        for identity, process in self.processes.items():
            process.stop()
            print(f"--- {identity} log tail ---\n{process.tail(30)}")
        try:
            self.coordination.delete_namespaced_lease(self.lease, OPERATOR_NAMESPACE)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        name = f"aliasop-test-{self.shard}"
        for delete in (self.rbac.delete_namespaced_role_binding, self.rbac.delete_namespaced_role):
            try:
                delete(name, OPERATOR_NAMESPACE)
            except client.ApiException as exc:
                if exc.status != 404:  # stopped before
                    raise


@pytest.fixture
def replicas(
    k8s: client.ApiClient, operator_kubeconfig: str, mlflow_uri: str, tmp_path: Path
) -> Iterator[Replicas]:
    shard = Replicas(k8s, operator_kubeconfig, mlflow_uri, tmp_path)
    try:
        yield shard
    finally:
        shard.stop()


@pytest.fixture
def labelled(k8s: client.ApiClient, restricted: str, model_name: str) -> Callable[[str, str], View]:
    """Create a ModelDeployment of the model's @champion in `shard`: labelled(name, shard)."""
    api = client.CustomObjectsApi(k8s)

    def create(name: str, shard: str) -> View:
        body = {
            "apiVersion": "aliasop.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": restricted, "labels": {SHARD_LABEL: shard}},
            "spec": {
                "model": f"models:/{model_name}@champion",
                "replicas": 2,
                "pollIntervalSeconds": 5,
            },
        }
        api.create_namespaced_custom_object(
            "aliasop.io", "v1alpha1", restricted, "modeldeployments", body
        )
        return View(k8s, restricted, name)

    return create


class Writes:
    """Every write to one ModelDeployment and to its Deployment, through watches from the
    moment it starts: a second leader's rollout of a version already rolled out shows here (a
    history entry started or finished again, the template set again), where it would add no
    ReplicaSet."""

    def __init__(self, view: View) -> None:
        self.templates: list[str] = []  # the template's version, at each change of it
        self.entries: list[tuple[str, str, str]] = []  # (version, startedAt, outcome) changes
        self._outcomes: dict[tuple[str, str], str] = {}  # the last, by (version, startedAt)
        self._followers = [
            Follower(
                view.apps.list_namespaced_deployment,
                self._on_deployments,
                namespace=view.namespace,
                field_selector=f"metadata.name={view.name}",
            ),
            Follower(
                view.custom.list_namespaced_custom_object,
                self._on_mdeps,
                "aliasop.io",
                "v1alpha1",
                view.namespace,
                "modeldeployments",
                field_selector=f"metadata.name={view.name}",
            ),
        ]
        for follower in self._followers:
            follower.start()

    def _on_deployments(self, events: list[tuple[str, client.V1Deployment]]) -> None:
        for _, deployment in events:
            version = deployment.spec.template.metadata.labels[VERSION_LABEL]
            if self.templates[-1:] != [version]:
                self.templates.append(version)

    def _on_mdeps(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        for _, body in events:
            for entry in (body.get("status") or {}).get("history", []):
                key = (entry["version"], entry["startedAt"])
                if self._outcomes.get(key) != entry["outcome"]:
                    self._outcomes[key] = entry["outcome"]
                    self.entries.append((*key, entry["outcome"]))

    def rollouts(self, version: str) -> list[tuple[str, str]]:
        """(startedAt, outcome) of `version`'s history entries, in the order written."""
        return [(started, outcome) for v, started, outcome in self.entries if v == version]

    def stop(self) -> None:
        for follower in self._followers:
            follower.stop()
            follower.check()


@dataclass
class Pair:
    """Replicas `a` and `b` of one shard, and `bikes` of that shard serving version 1, whose
    writes are followed from then on."""

    view: View
    leader: str
    standby: str
    writes: Writes


@pytest.fixture
def pair(
    replicas: Replicas, labelled: Callable[[str, str], View], two_versions: Versions
) -> Iterator[Pair]:
    replicas.start("a")
    replicas.start("b")
    view = labelled("bikes", replicas.shard)
    view.wait_serving(two_versions[0].version)
    leader = replicas.wait_leader()
    writes = Writes(view)
    try:
        yield Pair(view, leader, "b" if leader == "a" else "a", writes)
    finally:
        writes.stop()


def rolled_out_once(pair: Pair, before: str, version: str) -> None:
    """`version` serves after one rollout from `before`, as every write since shows: the
    Deployment's template set to it once (never back and forth), one history entry for it,
    started once and finished once."""
    status = pair.view.wait_serving(version)
    assert [entry["version"] for entry in status["history"]].count(version) == 1
    wait_for(
        lambda: pair.writes.templates[-1:] == [version], 10, message="the template's write seen"
    )
    assert pair.writes.templates == [before, version], pair.writes.templates
    started = {started for started, _ in pair.writes.rollouts(version)}
    outcomes = [outcome for _, outcome in pair.writes.rollouts(version)]
    assert len(started) == 1, pair.writes.entries
    assert outcomes in (["Progressing", "Succeeded"], ["Succeeded"]), pair.writes.entries


def test_a_killed_leader_s_standby_takes_over_and_rolls_out_a_move_made_meanwhile_once(
    replicas: Replicas, pair: Pair, two_versions: Versions, model_name: str, mlflow_uri: str
) -> None:
    assert counts_by(replicas.processes[pair.standby], "aliasop_leader", "") == {"": 0.0}

    replicas.processes[pair.leader].kill()
    killed = time.monotonic()
    bikes.set_alias(mlflow_uri, model_name, "champion", two_versions[1].version)

    new_leader = replicas.wait_leader(other_than=pair.leader, timeout=LEASE_SECONDS + 10)
    assert new_leader == pair.standby
    assert time.monotonic() - killed < LEASE_SECONDS + 3
    rolled_out_once(pair, two_versions[0].version, two_versions[1].version)


def test_a_frozen_leader_is_replaced_and_writes_nothing_once_it_thaws(
    replicas: Replicas, pair: Pair, two_versions: Versions, model_name: str, mlflow_uri: str
) -> None:
    view, frozen = pair.view, replicas.processes[pair.leader]

    frozen.signal(signal.SIGSTOP)  # the split-brain case: it still believes it leads
    replicas.wait_leader(other_than=pair.leader, timeout=LEASE_SECONDS + 10)
    bikes.set_alias(mlflow_uri, model_name, "champion", two_versions[1].version)
    rolled_out_once(pair, two_versions[0].version, two_versions[1].version)
    # The same in two reads in a row: the new leader's last Event of the rollout is posted.
    seen: list[Settled | None] = []

    def settled() -> Settled | None:
        seen.append(settled_state(view))
        return seen[-1] if len(seen) > 1 and seen[-1] == seen[-2] else None

    before = wait_for(settled, timeout=60, message="the rollout settled")
    assert before.events  # the rollouts' own: the query finds what the operator posts

    # Its passes and its registry poll are overdue, with v1 in its memory: it would write
    # now if it could.
    frozen.signal(signal.SIGCONT)
    assert frozen.wait_exit(timeout=15) == 1
    assert "lost Lease" in frozen.output()
    assert settled_state(view) == before  # nothing written: no status, child, nor Event


@dataclass(frozen=True)
class Settled:
    """What a write of the operator's would change once the rollout has finished."""

    resource_version: str  # the ModelDeployment's: any status write
    generation: int  # the Deployment's: any change of its spec
    service_version: str  # the Service's resourceVersion: any change of it
    events: frozenset[str]  # the names of the Events about the ModelDeployment


def settled_state(view: View) -> Settled | None:
    deployment = view.deployment()
    assert deployment is not None
    done = (
        deployment.status.updated_replicas == deployment.status.replicas == 2
        and deployment.status.observed_generation == deployment.metadata.generation
    )
    if not done:
        return None
    events = view.core.list_namespaced_event(
        view.namespace,
        field_selector=f"involvedObject.kind=ModelDeployment,involvedObject.name={view.name}",
    ).items
    return Settled(
        resource_version=view.mdep()["metadata"]["resourceVersion"],
        generation=deployment.metadata.generation,
        service_version=view.core.read_namespaced_service(
            view.name, view.namespace
        ).metadata.resource_version,
        events=frozenset(event.metadata.name for event in events),
    )


def test_a_leader_stopped_by_sigterm_hands_over_in_moments_with_its_rollout(
    replicas: Replicas, pair: Pair, two_versions: Versions, model_name: str, mlflow_uri: str
) -> None:
    leader = replicas.processes[pair.leader]
    bikes.set_alias(mlflow_uri, model_name, "champion", two_versions[1].version)
    stopping = time.monotonic()
    leader.stop()  # SIGTERM, as a rolling update sends it
    replicas.wait_leader(other_than=pair.leader, timeout=LEASE_SECONDS)
    handover = time.monotonic() - stopping

    assert "released Lease" in leader.output()
    # Released, not expired: an unreleased Lease expires for the standby a lease duration
    # after the last renewal it saw, at most a retry period before the SIGTERM.
    assert handover < LEASE_SECONDS / 2, f"handover in {handover:.2f}s"
    rolled_out_once(pair, two_versions[0].version, two_versions[1].version)


def test_a_standby_passes_webhook_deliveries_on_to_the_leader(
    replicas: Replicas,
    labelled: Callable[[str, str], View],
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
) -> None:
    from mlflow import MlflowClient

    v1, v2 = two_versions
    replicas.start("a")
    view = labelled("bikes", replicas.shard)
    view.wait_serving(v1.version)
    client_ = MlflowClient(tracking_uri=mlflow_uri)
    replicas.wait_leader()
    standby = replicas.start("b")
    webhook = client_.create_webhook(
        name=f"aliasop-{uuid.uuid4().hex[:6]}",
        url=f"http://127.0.0.1:{standby.env['ALIASOP_HTTP_PORT']}/webhooks/mlflow",
        events=["model_version_alias.created"],
        secret=WEBHOOK_SECRET,
    )
    try:
        bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
        wait_for(
            lambda: counts_by(standby, "aliasop_webhook_deliveries_total", "result").get(
                "passed_on"
            ),
            timeout=30,
            message="the standby passing the delivery on",
        )
        assert (
            counts_by(replicas.processes["a"], "aliasop_webhook_deliveries_total", "result")[
                "accepted"
            ]
            >= 1
        )
    finally:
        client_.delete_webhook(webhook.webhook_id)
    view.wait_serving(v2.version)


def test_the_operator_carries_on_after_its_token_is_revoked_with_a_fresh_one(
    replicas: Replicas,
    installed: Cluster,
    labelled: Callable[[str, str], View],
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    tmp_path: Path,
) -> None:
    v1, v2 = two_versions
    kubectl = [installed.kubectl_binary, "--kubeconfig", installed.kubeconfig]
    secrets = [f"aliasop-token-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for secret in secrets:
        create = ["create", "secret", "generic", secret]
        subprocess.run([*kubectl, "-n", OPERATOR_NAMESPACE, *create], check=True)
    kubeconfig = tmp_path / "kubeconfig"

    def token_bound_to(secret: str) -> str:
        local.service_account_kubeconfig(kubectl, OPERATOR_NAMESPACE, "aliasop", kubeconfig, secret)
        config: dict[str, Any] = json.loads(kubeconfig.read_text())
        token: str = config["users"][0]["user"]["token"]
        return token

    first = token_bound_to(secrets[0])
    replicas.start("a", leader_elect=False, KUBECONFIG=str(kubeconfig))
    view = labelled("bikes", replicas.shard)
    view.wait_serving(v1.version)

    token_bound_to(secrets[1])  # the kubeconfig now holds a fresh token: a rotation
    subprocess.run([*kubectl, "-n", OPERATOR_NAMESPACE, "delete", "secret", secrets[0]], check=True)
    server = json.loads(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    wait_for(
        lambda: (
            httpx.get(
                f"{server}/version", headers={"Authorization": f"Bearer {first}"}, verify=False
            ).status_code
            == 401
        ),
        timeout=60,
        message="the first token refused",
    )
    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)

    view.wait_serving(v2.version)
    assert "logging in afresh" in replicas.processes["a"].output()  # its own calls, not kopf's
    subprocess.run([*kubectl, "-n", OPERATOR_NAMESPACE, "delete", "secret", secrets[1]], check=True)


def test_two_shards_each_follow_only_their_own_resources(
    k8s: client.ApiClient,
    operator_kubeconfig: str,
    labelled: Callable[[str, str], View],
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    tmp_path: Path,
) -> None:
    v1, v2 = two_versions
    shards = [Replicas(k8s, operator_kubeconfig, mlflow_uri, tmp_path / str(i)) for i in (1, 2)]
    try:
        for shard in shards:
            shard.start("only")
        views = [labelled(f"bikes-{i}", shard.shard) for i, shard in enumerate(shards)]
        for view in views:
            view.wait_serving(v1.version)
        for shard, view in zip(shards, views, strict=True):
            assert shard.holder() == "only"  # each shard has a Lease of its own
            operator = shard.processes["only"]
            assert counts_by(operator, "aliasop_watched_resources", "") == {"": 1.0}
            deployment = view.deployment()
            assert deployment is not None
            assert deployment.metadata.labels[SHARD_LABEL] == shard.shard

        shards[1].stop()
        bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
        views[0].wait_serving(v2.version)
        assert views[1].status()["servingVersion"] == v1.version
        assert views[1].template_version() == v1.version
    finally:
        for shard in shards:
            shard.stop()
