"""A version whose pods never become available is rolled back, and not retried until its alias
moves away and back.

kwok makes the bad version's pods run but never turn Ready: for that version's pods in the test
namespace, a Stage of the test's own, with a weight, takes precedence over the cluster's default
pod-ready stage from tests/cluster/stages.yaml."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client, watch

from aliasop.builders import VERSION_LABEL
from aliasop_dev import bikes

from resources import NeverReady, Versions, View
from support import wait_for

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("operator")]

POLL_SECONDS = 5
DEADLINE_SECONDS = 30  # the smallest progressDeadlineSeconds the CRD accepts


def is_ready(pod: client.V1Pod) -> bool:
    conditions = pod.status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


Handler = Callable[[list[tuple[str, Any]]], None]


class Recorder:
    """Follows the pods and the Deployment of one ModelDeployment through watches, so that
    no state in between two polls goes unseen: the fewest Ready pods of one version at any
    moment, every pod of each version, and every reason of the Deployment's Progressing
    condition."""

    def __init__(self, view: View, steady_version: str) -> None:
        self.view, self.steady_version = view, steady_version
        self.pods: dict[str, client.V1Pod] = {}
        self.uids_by_version: dict[str, set[str]] = {}
        self.ever_ready: set[str] = set()  # versions any pod of which was Ready
        self.fewest_steady_ready: int | None = None
        self.progressing_reasons: list[str] = []
        self.errors: list[BaseException] = []
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        selector = f"app.kubernetes.io/instance={view.name}"
        self._threads = [
            threading.Thread(
                target=self._follow,
                args=(view.core.list_namespaced_pod, self._on_pods),
                kwargs={"namespace": view.namespace, "label_selector": selector},
                daemon=True,
            ),
            threading.Thread(
                target=self._follow,
                args=(view.apps.list_namespaced_deployment, self._on_deployments),
                kwargs={
                    "namespace": view.namespace,
                    "field_selector": f"metadata.name={view.name}",
                },
                daemon=True,
            ),
        ]

    def __enter__(self) -> Recorder:
        for thread in self._threads:
            thread.start()
        wait_for(lambda: self.fewest_steady_ready is not None, 10, message="the first pods")
        return self

    def __exit__(self, *_: object) -> None:
        self._stopped.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _follow(self, list_: Callable[..., Any], handle: Handler, **kw: Any) -> None:
        """List, then watch from there: `handle` sees every change, each exactly once."""
        try:
            listed = list_(**kw)
            with self._lock:
                handle([("ADDED", item) for item in listed.items])  # one moment, one call
            version = listed.metadata.resource_version
            while not self._stopped.is_set():
                stream = watch.Watch().stream(
                    list_, resource_version=version, timeout_seconds=2, **kw
                )
                for event in stream:
                    with self._lock:
                        handle([(event["type"], event["object"])])
                    version = event["object"].metadata.resource_version
        except BaseException as exc:  # reported by check(), in the test's thread
            self.errors.append(exc)

    def _on_pods(self, events: list[tuple[str, client.V1Pod]]) -> None:
        for kind, pod in events:
            uid, version = pod.metadata.uid, pod.metadata.labels[VERSION_LABEL]
            self.uids_by_version.setdefault(version, set()).add(uid)
            if kind == "DELETED":
                self.pods.pop(uid, None)
            else:
                self.pods[uid] = pod
                if is_ready(pod):
                    self.ever_ready.add(version)
        steady = sum(
            1
            for p in self.pods.values()
            if p.metadata.labels[VERSION_LABEL] == self.steady_version
            and p.metadata.deletion_timestamp is None
            and is_ready(p)
        )
        if self.fewest_steady_ready is None or steady < self.fewest_steady_ready:
            self.fewest_steady_ready = steady

    def _on_deployments(self, events: list[tuple[str, client.V1Deployment]]) -> None:
        for _, deployment in events:
            for condition in deployment.status.conditions or []:
                if condition.type == "Progressing" and (
                    self.progressing_reasons[-1:] != [condition.reason]
                ):
                    self.progressing_reasons.append(condition.reason)

    def versions(self) -> set[str]:
        """The versions of the pods that exist now."""
        with self._lock:
            return {p.metadata.labels[VERSION_LABEL] for p in self.pods.values()}

    def check(self) -> None:
        if self.errors:
            raise self.errors[0]


def seconds_between(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def test_failed_rollout_rolls_back_and_waits_for_the_alias_to_move(
    two_versions: Versions,
    model_name: str,
    mlflow_uri: str,
    serving_v1: Callable[..., View],
    never_ready: NeverReady,
) -> None:
    v1, v2 = two_versions
    bikes_view = serving_v1(
        replicas=2,
        pollIntervalSeconds=POLL_SECONDS,
        rollout={"progressDeadlineSeconds": DEADLINE_SECONDS},
    )
    assert bikes_view.pods_by_version() == {v1.version: 2}

    never_ready.start(v2.version)
    with Recorder(bikes_view, steady_version=v1.version) as recorder:
        bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)

        # The rollout to v2 starts, its surge pod never turns Ready, the Deployment gives up
        # after its deadline and the operator rolls back to v1.
        def rolled_back() -> dict[str, Any] | None:
            recorder.check()
            status = bikes_view.status()
            history = [(h["version"], h["reason"], h["outcome"]) for h in status.get("history", [])]
            done = history[:1] == [(v1.version, "Rollback", "Succeeded")]
            return status if done else None

        status = wait_for(rolled_back, DEADLINE_SECONDS + 60, message="the rollback to v1")
        assert "ProgressDeadlineExceeded" in recorder.progressing_reasons
        assert bikes_view.template_version() == v1.version
        assert status["phase"] == "Degraded"
        assert f"version {v2.version} failed to roll out" in status["message"]
        assert status["failedVersion"] == v2.version
        assert status["servingVersion"] == status["lastGoodVersion"] == v1.version
        assert status["aliasVersion"] == v2.version
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "RolloutFailed")
        history = [(h["version"], h["reason"], h["outcome"]) for h in status["history"]]
        assert history == [
            (v1.version, "Rollback", "Succeeded"),
            (v2.version, "AliasMoved", "Failed"),
            (v1.version, "Created", "Succeeded"),
        ]
        wait_for(lambda: "RolloutFailed" in bikes_view.events(), 30, message="RolloutFailed")
        # The rollback reused v1's ReplicaSet; v2's surge pod is gone.
        assert len(bikes_view.replica_sets()) == 2
        wait_for(lambda: recorder.versions() == {v1.version}, 30, message="v2's pod to go")

        # The alias still points at v2: the operator keeps resolving it and leaves v1 alone.
        first = status["lastResolvedTime"]

        def polled_twice_more() -> bool:
            recorder.check()
            current = bikes_view.status()
            assert bikes_view.template_version() == v1.version, "v2 was retried"
            assert current["failedVersion"] == v2.version
            assert current["phase"] == "Degraded"
            return seconds_between(first, current["lastResolvedTime"]) >= 2 * POLL_SECONDS

        wait_for(polled_twice_more, 4 * POLL_SECONDS, message="two more polls")
        assert bikes_view.events().count("RolloutFailed") == 1

    recorder.check()
    # v1's two pods served throughout, the same two pods: never fewer Ready (maxUnavailable 0).
    assert recorder.fewest_steady_ready == 2
    assert len(recorder.uids_by_version[v1.version]) == 2
    # v2 got exactly one pod (maxSurge 1), which kwok never let turn Ready, and no retry.
    assert len(recorder.uids_by_version[v2.version]) == 1
    assert v2.version not in recorder.ever_ready

    # The alias moves away and back, and v2 is healthy now: it is tried again and serves.
    never_ready.stop()
    bikes.set_alias(mlflow_uri, model_name, "champion", v1.version)
    status = wait_for(
        lambda: (s := bikes_view.status()).get("aliasVersion") == v1.version and s,
        3 * POLL_SECONDS,
        message="the operator to see the alias on v1",
    )
    assert status.get("failedVersion") is None
    bikes_view.wait_serving(v1.version, timeout=3 * POLL_SECONDS)
    assert bikes_view.template_version() == v1.version

    bikes.set_alias(mlflow_uri, model_name, "champion", v2.version)
    status = bikes_view.wait_serving(v2.version, timeout=60)
    assert status.get("failedVersion") is None
    assert status["aliasVersion"] == status["targetVersion"] == v2.version
    assert bikes_view.pods_by_version() == {v2.version: 2}
    history = [(h["version"], h["reason"], h["outcome"]) for h in status["history"]]
    assert history[0] == (v2.version, "AliasMoved", "Succeeded")
    assert len(bikes_view.replica_sets()) == 2  # v2's ReplicaSet, reused
