"""The operator's defaults and wiring: Settings, the Lease it elects on, `aliasop run`'s
options, and the fence build_runtime puts in front of every write."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kopf
import pytest

from aliasop import cli, handlers, runtime
from aliasop.interfaces import NotLeading
from aliasop.runtime import Runtime, build_runtime, lease_config
from aliasop.settings import Settings
from aliasop.sharding import lease_name

SHARD = "aliasop.io/shard=a"


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read ALIASOP_* variables: the defaults are the code's, not this shell's."""
    for name in os.environ:
        if name.startswith("ALIASOP_"):
            monkeypatch.delenv(name)


@pytest.fixture
async def built() -> AsyncIterator[Callable[[Settings], Runtime]]:
    """build_runtime, its clients closed when the test ends."""
    runtimes: list[Runtime] = []

    def build(settings: Settings) -> Runtime:
        runtimes.append(build_runtime(settings))
        return runtimes[-1]

    yield build
    for made in runtimes:
        await made.registry.aclose()
        await made.measurer.aclose()
        await made.cluster.aclose()


@pytest.mark.timeout(10)
def test_leader_election_is_off_by_default_with_client_go_s_timings() -> None:
    settings = Settings()
    assert settings.leader_elect is False
    assert (
        settings.leader_elect_lease_duration_seconds,
        settings.leader_elect_renew_deadline_seconds,
        settings.leader_elect_retry_period_seconds,
    ) == (15.0, 10.0, 2.0)


@pytest.mark.timeout(10)
def test_the_lease_is_in_the_pod_s_namespace_else_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    namespace_file = tmp_path / "namespace"
    monkeypatch.setattr(runtime, "POD_NAMESPACE_FILE", namespace_file)
    assert lease_config(Settings()).namespace == "default"  # not in a pod
    namespace_file.write_text("ops\n")
    assert lease_config(Settings()).namespace == "ops"
    assert lease_config(Settings(leader_elect_namespace="elsewhere")).namespace == "elsewhere"


@pytest.mark.timeout(10)
def test_the_lease_is_aliasop_and_a_shard_s_its_own() -> None:
    assert lease_config(Settings()).name == "aliasop"
    sharded = lease_config(Settings(watch_label_selector=SHARD)).name
    assert sharded == lease_name(SHARD) != "aliasop"
    assert sharded != lease_config(Settings(watch_label_selector="aliasop.io/shard=b")).name
    named = Settings(watch_label_selector=SHARD, leader_elect_lease_name="mine")
    assert lease_config(named).name == "mine"


@pytest.mark.timeout(10)
async def test_aliasop_run_options_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through main, up to kopf.run (not started): options override the environment, and
    the environment fills in what no option names."""
    started: list[kopf.Memo] = []

    def run(memo: kopf.Memo, **_: Any) -> None:
        started.append(memo)

    monkeypatch.setattr(kopf, "run", run)
    monkeypatch.setattr(kopf, "configure", lambda **_: None)  # the test run's logging stays
    # main keeps the official client from being imported: only within this test.
    monkeypatch.setitem(sys.modules, "kubernetes", sys.modules.get("kubernetes"))
    monkeypatch.setenv("ALIASOP_LEADER_ELECT_NAMESPACE", "from-env")
    monkeypatch.setenv("ALIASOP_TRACKING_URI", "http://mlflow.example:5000")
    argv = ["run", "--leader-elect", "--leader-elect-namespace", "ops"]
    assert cli.main([*argv, "--watch-label-selector", SHARD]) == 0

    (memo,) = started
    made: Runtime = memo.runtime
    try:
        settings = made.settings
        assert settings.leader_elect is True
        assert settings.leader_elect_namespace == "ops"
        assert settings.watch_label_selector == SHARD
        assert settings.tracking_uri == "http://mlflow.example:5000"
        assert made.elector is not None
        assert (made.elector.config.namespace, made.elector.config.name) == (
            "ops",
            lease_name(SHARD),
        )
    finally:
        await made.registry.aclose()
        await made.measurer.aclose()
        await made.cluster.aclose()


@pytest.mark.timeout(10)
def test_without_leader_election_nothing_is_fenced(built: Callable[[Settings], Runtime]) -> None:
    made = built(Settings())
    assert made.elector is None
    assert made.cluster.fence is None and made.registry.fence is None


@pytest.mark.timeout(10)
def test_leader_election_fences_the_cluster_s_and_the_registry_s_writes(
    built: Callable[[Settings], Runtime],
) -> None:
    made = built(Settings(leader_elect=True, leader_elect_namespace="ops"))
    assert made.elector is not None
    assert made.cluster.fence == made.elector.fence
    assert made.registry.fence == made.elector.fence
    with pytest.raises(NotLeading):  # no Lease taken yet
        made.cluster.fence()


@pytest.mark.timeout(10)
async def test_kopf_posts_no_events_of_its_own() -> None:
    """Only the leader writes: aliasop's Events go through the fenced kube.Cluster."""

    class Starting:
        settings = Settings()
        started = False

        async def start(self) -> None:
            self.started = True

    settings, starting = kopf.OperatorSettings(), Starting()
    await handlers.configure(settings=settings, memo=kopf.Memo(runtime=starting))
    assert settings.posting.enabled is False
    assert starting.started
