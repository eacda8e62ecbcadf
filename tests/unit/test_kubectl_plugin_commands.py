"""`kubectl aliasop` on a fake API server and a fake MLflow: what each command shows, writes
and exits with."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from aliasop.kubectl import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_NOTHING_TO_DO,
    EXIT_OK,
    Plugin,
    PluginError,
    main,
)
from aliasop.models import ModelDeploymentStatus
from aliasop.plugin_view import build_view, count_pods, render_tree, undo_target

pytestmark = pytest.mark.timeout(10)
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def history(*entries: tuple[str, str]) -> list[dict[str, Any]]:
    """(version, outcome) newest first."""
    return [
        {
            "version": version,
            "reason": "AliasMoved",
            "startedAt": "2026-12-07T11:50:00Z",
            "outcome": outcome,
        }
        for version, outcome in entries
    ]


def canary_resource(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "bikes", "namespace": "ml", "uid": "u1", "annotations": {}},
        "spec": {
            "model": "models:/bikes@champion",
            "trackingUri": "http://mlflow.example:5000",
            "replicas": 4,
            "rollout": {"strategy": "Canary", "steps": [{"setWeight": 25}, {"pause": {}}]},
        },
        "status": {
            "aliasVersion": "4",
            "targetVersion": "4",
            "servingVersion": "3",
            "lastGoodVersion": "3",
            "phase": "Progressing",
            "servingVersionUrl": "http://mlflow.example:5000/#/models/bikes/versions/3",
            "canary": {
                "version": "4",
                "stableVersion": "3",
                "step": 2,
                "steps": 2,
                "weight": 25,
                "phase": "Paused",
                "stepStartedAt": "2026-12-07T11:58:00Z",
                "analysis": {
                    "startedAt": "2026-12-07T11:57:00Z",
                    "phase": "Successful",
                    "metricResults": [
                        {
                            "name": "success-rate",
                            "phase": "Successful",
                            "count": 2,
                            "successful": 2,
                            "measurements": [
                                {
                                    "metric": "success-rate",
                                    "phase": "Successful",
                                    "value": 0.99,
                                    "at": "2026-12-07T11:57:30Z",
                                }
                            ],
                        }
                    ],
                },
            },
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Serving"},
                {"type": "Stalled", "status": "False", "reason": "AsExpected"},
                {"type": "SignatureCompatible", "status": "True", "reason": "Compatible"},
            ],
            "history": history(("4", "Progressing"), ("3", "Succeeded"), ("2", "Succeeded")),
            **status,
        },
    }


def pod(version: str, variant: str, ready: bool, terminating: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "labels": {"aliasop.io/model-version": version, "aliasop.io/variant": variant}
    }
    if terminating:
        meta["deletionTimestamp"] = "2026-12-07T11:59:00Z"
    return {
        "metadata": meta,
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


class FakeKube:
    def __init__(self, *resources: dict[str, Any], pods: list[dict[str, Any]] = ()) -> None:  # type: ignore[assignment]
        self.objects = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in resources}
        self.patches: list[tuple[str, str, dict[str, Any]]] = []
        self.pod_selectors: list[str] = []
        self._pods = list(pods)

    default_namespace = "ml"

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        if (namespace, name) not in self.objects:
            raise PluginError(f"HTTP 404: {name} not found", EXIT_NOT_FOUND)
        return copy.deepcopy(self.objects[namespace, name])

    def resources(self, namespace: str | None) -> list[dict[str, Any]]:
        return [copy.deepcopy(r) for (ns, _), r in self.objects.items() if namespace in (None, ns)]

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.pod_selectors.append(selector)
        return self._pods

    def merge_patch(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.patches.append((namespace, name, patch))


class FakeMover:
    def __init__(self, refuse: str = "") -> None:
        self.moves: list[tuple[str, str, str, str]] = []
        self.refuse = refuse

    def move(self, tracking_uri: str, model: str, alias: str, version: str) -> None:
        if self.refuse:
            raise PluginError(self.refuse)
        self.moves.append((tracking_uri, model, alias, version))


def run(kube: FakeKube, *argv: str, mover: FakeMover | None = None) -> int:
    return main(list(argv), kube=kube, mover=mover or FakeMover())


def test_get_draws_the_tree_with_versions_canary_analysis_gates_pods_and_history() -> None:
    pods = [pod("3", "main", True), pod("3", "main", True), pod("4", "canary", False)]
    view = build_view(canary_resource(), pods)
    tree = render_tree(view, NOW)
    assert tree.splitlines()[0] == "ml/bikes  bikes@champion  Progressing"
    assert "versions: alias 4  target 4  serving 3  last good 3" in tree
    assert "mlflow: http://mlflow.example:5000/#/models/bikes/versions/3" in tree
    assert "canary 4 beside stable 3: step 2/2 weight 25% Paused" in tree
    assert "analysis success-rate: Successful  last 0.99  (2 passed, 0 failed, 0 errors)" in tree
    assert "SignatureCompatible True (Compatible)" in tree
    assert "version 3 (main): 2/2 ready" in tree
    assert "version 4 (canary): 0/1 ready" in tree
    assert "└─ 3  AliasMoved  Succeeded  started 10m ago" in tree
    assert "`kubectl aliasop promote bikes`" in tree


def test_pods_are_counted_by_version_and_side_without_the_terminating() -> None:
    pods = [
        pod("10", "main", True),
        pod("9", "main", True, terminating=True),
        pod("9", "main", False),
    ]
    counts = [(c.version, c.variant, c.ready, c.total) for c in count_pods(pods)]
    assert counts == [("9", "main", 0, 1), ("10", "main", 1, 1)]


def test_get_json_and_the_selector_of_the_serving_pods(capsys: pytest.CaptureFixture[str]) -> None:
    kube = FakeKube(canary_resource(), pods=[pod("3", "main", True)])
    assert run(kube, "get", "bikes", "-o", "json") == EXIT_OK
    shown = json.loads(capsys.readouterr().out)
    assert shown["canary"]["weight"] == 25
    assert shown["pods"] == [{"version": "3", "variant": "main", "ready": 1, "total": 1}]
    assert len(shown["history"]) == 3
    assert kube.pod_selectors == [
        "app.kubernetes.io/name=model-server,app.kubernetes.io/instance=bikes,"
        "app.kubernetes.io/managed-by=aliasop"
    ]


def test_list_one_line_each_and_all_namespaces(capsys: pytest.CaptureFixture[str]) -> None:
    other = canary_resource()
    other["metadata"] = {"name": "taxis", "namespace": "other", "uid": "u2"}
    kube = FakeKube(canary_resource(), other)
    assert run(kube, "list") == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "NAMESPACE", "NAME", "MODEL", "SERVING", "TARGET", "PHASE", "CANARY", "WAITS"
    ]  # fmt: skip
    assert [line.split()[:2] for line in lines[1:]] == [["ml", "bikes"]]
    assert run(kube, "list", "-A") == EXIT_OK
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_promote_annotates_the_canary_version(capsys: pytest.CaptureFixture[str]) -> None:
    kube = FakeKube(canary_resource())
    assert run(kube, "promote", "bikes") == EXIT_OK
    assert run(kube, "promote", "bikes", "--full") == EXIT_OK
    assert kube.patches == [
        ("ml", "bikes", {"metadata": {"annotations": {"aliasop.io/promote": "4"}}}),
        ("ml", "bikes", {"metadata": {"annotations": {"aliasop.io/promote-full": "4"}}}),
    ]
    assert "aliasop.io/promote=4" in capsys.readouterr().out


def test_promote_without_a_canary_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    kube = FakeKube(canary_resource(canary=None))
    assert run(kube, "promote", "bikes") == EXIT_NOTHING_TO_DO
    assert "no canary in flight" in capsys.readouterr().err
    assert kube.patches == []


def test_abort_names_the_version_rolling_out_canary_or_rolling_update() -> None:
    kube = FakeKube(canary_resource())
    assert run(kube, "abort", "bikes") == EXIT_OK
    rolling = FakeKube(canary_resource(canary=None))
    assert run(rolling, "abort", "bikes") == EXIT_OK
    steady = FakeKube(canary_resource(canary=None, targetVersion="3"))
    assert run(steady, "abort", "bikes") == EXIT_NOTHING_TO_DO
    patches = [p for k in (kube, rolling, steady) for p in k.patches]
    assert [p[2]["metadata"]["annotations"] for p in patches] == [
        {"aliasop.io/abort": "4"},
        {"aliasop.io/abort": "4"},
    ]


def test_retry_names_the_failed_version() -> None:
    kube = FakeKube(canary_resource(canary=None, failedVersion="4", targetVersion="3"))
    assert run(kube, "retry", "bikes") == EXIT_OK
    assert kube.patches[0][2] == {"metadata": {"annotations": {"aliasop.io/retry": "4"}}}
    assert run(FakeKube(canary_resource()), "retry", "bikes") == EXIT_NOTHING_TO_DO


def test_pause_and_resume_write_spec_paused() -> None:
    kube = FakeKube(canary_resource())
    assert run(kube, "pause", "bikes", "-n", "ml") == EXIT_OK
    assert run(kube, "resume", "bikes") == EXIT_OK
    assert [p[2] for p in kube.patches] == [{"spec": {"paused": True}}, {"spec": {"paused": False}}]


def test_a_missing_resource_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    kube = FakeKube(canary_resource())
    assert run(kube, "pause", "nope") == EXIT_NOT_FOUND
    assert "not found" in capsys.readouterr().err
    assert kube.patches == []


def test_undo_moves_the_alias_to_the_last_earlier_good_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mover = FakeMover()
    assert run(FakeKube(canary_resource()), "undo", "bikes", mover=mover) == EXIT_OK
    assert run(FakeKube(canary_resource()), "undo", "bikes", "--to-version", "2", mover=mover) == 0
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.public.example")
    assert run(FakeKube(canary_resource()), "undo", "bikes", mover=mover) == EXIT_OK
    assert mover.moves == [
        ("http://mlflow.example:5000", "bikes", "champion", "3"),
        ("http://mlflow.example:5000", "bikes", "champion", "2"),
        ("https://mlflow.public.example", "bikes", "champion", "3"),
    ]


def test_undo_target_skips_failures_and_the_current_version() -> None:
    status = ModelDeploymentStatus.model_validate(
        {
            "aliasVersion": "5",
            "history": history(
                ("5", "Succeeded"), ("4", "Failed"), ("3", "Superseded"), ("2", "Succeeded")
            ),
        }
    )
    assert undo_target(status) == "2"
    assert undo_target(ModelDeploymentStatus.model_validate({"aliasVersion": "1"})) is None


def test_undo_without_history_or_tracking_uri_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    bare = canary_resource(history=[])
    assert run(FakeKube(bare), "undo", "bikes") == EXIT_NOTHING_TO_DO
    assert "--to-version" in capsys.readouterr().err
    no_uri = canary_resource()
    del no_uri["spec"]["trackingUri"]
    assert run(FakeKube(no_uri), "undo", "bikes") == EXIT_FAILED
    assert "set MLFLOW_TRACKING_URI" in capsys.readouterr().err


def test_undo_refused_by_mlflow_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    mover = FakeMover(refuse="MLflow did not move @champion: access denied")
    assert run(FakeKube(canary_resource()), "undo", "bikes", mover=mover) == EXIT_FAILED
    assert "access denied" in capsys.readouterr().err


def test_watch_redraws_only_on_change() -> None:
    frames = iter(["a", "a", "b", "b", "c"])
    shown: list[str] = []
    plugin = Plugin(FakeKube(), FakeMover(), shown.append, lambda: NOW)
    assert plugin.watch(lambda: next(frames), iter(range(5))) == EXIT_OK
    assert [frame[-1] for frame in shown] == ["a", "b", "c"]


def test_a_status_that_does_not_parse_is_shown_as_a_problem_not_a_trace() -> None:
    broken = canary_resource()
    broken["status"] = {"phase": "Sideways"}
    tree = render_tree(build_view(broken), NOW)
    assert "status does not parse" in tree
