"""aliasop.reconciler on fakes, in-process: each path of a pass and of tracking.

The fakes stand for the interfaces a pass works through (children, status and Events,
resolver, clock); the scheduler is the real one, not started, so each test runs the passes
it wants with `run_pass` and sees what the scheduler would run next.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aliasop.analysis import MeasurementError
from aliasop.analysis_models import AnalysisMetric, ErrorKind
from aliasop.builders import VERSION_LABEL, ServingDefaults
from aliasop.interfaces import ApiError, ApiUnreachable, ModelKey, NameClash, ResourceKey
from aliasop.models import (
    ConditionType,
    HistoryEntry,
    ModelDeploymentStatus,
    ModelUri,
    Outcome,
    Phase,
    Reason,
    RegistryProblem,
    ResolvedVersion,
)
from aliasop.reconciler import Reconciler, Tracker
from aliasop.scheduler import Scheduler
from aliasop.templating import TemplateContext

pytestmark = pytest.mark.timeout(10)

KEY: ResourceKey = ("ml", "bikes")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TRACKING_URI = "http://mlflow.test:5000"
log = logging.getLogger("test_reconciler")


@dataclass
class FakeCluster:
    """Children, status and Events: records what a pass writes; `refuse` raises on applies."""

    applied: list[dict[str, Any]] = field(default_factory=list)
    revisions: list[tuple[str, str | None]] = field(default_factory=list)  # (kind, as watched)
    managers: list[str] = field(default_factory=list)  # the field manager of each apply
    statuses: list[dict[str, Any]] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)  # (type, reason)
    forgotten: list[ResourceKey] = field(default_factory=list)
    refuse: Exception | None = None  # raised by every apply while set
    refuse_once: dict[str, Exception] = field(default_factory=dict)  # kind -> at its next apply
    deleted: list[str] = field(default_factory=list)  # kinds
    wrote: asyncio.Event = field(default_factory=asyncio.Event)  # set at every apply
    # (kind, name) -> the controller's uid of an object that exists; absent: there is none
    controllers: dict[tuple[str, str], str] = field(default_factory=dict)  # "": none
    # (kind, name) of objects without a controller that aliasop.io/adopt hands over
    handed_over: set[tuple[str, str]] = field(default_factory=set)
    # The ModelDeployment as the API server holds it (None: there is none), and its
    # resourceVersion, which every write of it moves on.
    resource: dict[str, Any] | None = None
    resource_version: int = 0
    reads: int = 0  # of the ModelDeployment

    def store(self, body: dict[str, Any], deleted: bool = False) -> dict[str, Any]:
        """A write of the ModelDeployment's metadata or spec (a deletion): `body` with the
        status the API server holds, as the watch shows it."""
        self.resource_version += 1
        before = self.resource
        same = before is not None and before["metadata"]["uid"] == body["metadata"]["uid"]
        status = before.get("status") if same and before is not None else None
        meta = {**body["metadata"], "resourceVersion": str(self.resource_version)}
        stored = {**body, "metadata": meta, **({"status": status} if status else {})}
        self.resource = None if deleted else stored
        return stored

    async def until(self, condition: Callable[[], bool]) -> None:
        """Let the scheduler's passes run until `condition` holds after an apply."""
        async with asyncio.timeout(5):
            while not condition():
                self.wrote.clear()
                await self.wrote.wait()

    async def apply(
        self, manifest: dict[str, Any], current_revision: str | None, field_manager: str = "aliasop"
    ) -> None:
        self._own(manifest, handover=True)
        if self.refuse is not None:
            raise self.refuse
        if manifest["kind"] in self.refuse_once:
            raise self.refuse_once.pop(manifest["kind"])
        self.applied.append(manifest)
        self.managers.append(field_manager)
        self.revisions.append((manifest["kind"], current_revision))
        self.wrote.set()

    async def delete(self, manifest: dict[str, Any]) -> None:
        self._own(manifest, handover=False)
        self.deleted.append(manifest["kind"])

    async def claim(self, manifest: dict[str, Any]) -> None:
        self._own(manifest, handover=True)

    def _own(self, manifest: dict[str, Any], handover: bool) -> None:
        """As kube.Cluster: absent, or controlled by the manifest's controller, or handed over."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        holder = self.controllers.get((kind, name))
        owner = manifest["metadata"]["ownerReferences"][0]
        if holder is None or holder == owner["uid"]:
            return
        if handover and not holder and (kind, name) in self.handed_over:
            return
        held_by = f"ModelDeployment {holder}" if holder else ""
        raise NameClash(kind, name, held_by, owner["name"])

    def forget(self, namespace: str, name: str) -> None:
        self.forgotten.append((namespace, name))

    async def patch_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> str | None:
        if isinstance(self.refuse, ApiError) and self.refuse.status == 404:
            raise self.refuse  # the resource itself is gone
        if resource_version is not None and resource_version != str(self.resource_version):
            raise ApiError(409, "the object has been modified")
        self.statuses.append(status)
        self.resource_version += 1
        if self.resource is not None:
            meta = {**self.resource["metadata"], "resourceVersion": str(self.resource_version)}
            self.resource = {**self.resource, "metadata": meta, "status": status}
        return str(self.resource_version)

    async def read_resource(self, namespace: str, name: str) -> dict[str, Any]:
        self.reads += 1
        if isinstance(self.refuse, ApiError) and self.refuse.status == 404:
            raise self.refuse
        if self.resource is None:
            raise ApiError(404, "not found", missing=("modeldeployments", name))
        return self.resource

    async def post_event(
        self, involved: Mapping[str, Any], kind: str, reason: str, message: str, at: datetime
    ) -> None:
        self.events.append((kind, reason))

    def versions_applied(self) -> list[str]:
        return [
            m["spec"]["template"]["metadata"]["labels"]["aliasop.io/model-version"]
            for m in self.applied
            if m["kind"] == "Deployment"
        ]


@dataclass
class FakeResolver:
    """Resolves every alias to `answer`; records which model each resource has watched."""

    answer: ResolvedVersion | RegistryProblem = field(
        default_factory=lambda: ResolvedVersion("1", "run1")
    )
    watching: dict[ResourceKey, ModelKey] = field(default_factory=dict)
    by_alias: dict[str, ResolvedVersion] = field(default_factory=dict)  # others: `answer`

    def watch(self, resource: ResourceKey, model: ModelKey, interval: float) -> None:
        self.watching[resource] = model

    def unwatch(self, resource: ResourceKey) -> None:
        self.watching.pop(resource, None)

    async def resolve(self, tracking_uri: str, uri: ModelUri) -> ResolvedVersion:
        if uri.alias in self.by_alias:
            return self.by_alias[uri.alias]
        if isinstance(self.answer, RegistryProblem):
            raise self.answer
        return self.answer

    async def model_changed(self, model: str, aliases: bool) -> int:
        return 0


@dataclass
class FakeFacts:
    """Model-version tags and signature inputs by version; counts the signature look-ups."""

    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    signatures: dict[str, str | None] = field(default_factory=dict)
    signature_lookups: int = 0
    problem: RegistryProblem | None = None

    async def version_tags(self, tracking_uri: str, name: str, version: str) -> dict[str, str]:
        if self.problem is not None:
            raise self.problem
        return self.tags.get(version, {})

    async def signature_inputs(self, tracking_uri: str, name: str, version: str) -> str | None:
        self.signature_lookups += 1
        return self.signatures.get(version)


@dataclass
class FakeWrites:
    """The registry's writes: tags by (version, key), and the alias moves asked for."""

    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    aliases: list[tuple[str, str]] = field(default_factory=list)  # (alias, version)
    pointing: dict[str, str] = field(default_factory=dict)  # alias -> version, as MLflow has it
    problem: RegistryProblem | None = None
    deleted: asyncio.Event = field(default_factory=asyncio.Event)  # set at every tag deletion

    async def set_version_tag(
        self, tracking_uri: str, name: str, version: str, key: str, value: str
    ) -> None:
        if self.problem is not None:
            raise self.problem
        self.tags[(version, key)] = value

    async def delete_version_tag(
        self, tracking_uri: str, name: str, version: str, key: str
    ) -> None:
        self.tags.pop((version, key), None)
        self.deleted.set()

    async def set_alias(self, tracking_uri: str, name: str, alias: str, version: str) -> None:
        self.aliases.append((alias, version))
        self.pointing[alias] = version

    async def alias_version(self, tracking_uri: str, name: str, alias: str) -> str | None:
        if self.problem is not None:
            raise self.problem
        return self.pointing.get(alias)


@dataclass
class FakeMeasurer:
    """Measures every metric as `values` says, by version; a missing version is an error."""

    values: dict[str, float] = field(default_factory=dict)
    taken: list[tuple[str, str]] = field(default_factory=list)  # (metric, version)

    async def measure(self, metric: AnalysisMetric, context: TemplateContext) -> float:
        self.taken.append((metric.name, context.version))
        if context.version not in self.values:
            raise MeasurementError(ErrorKind.NO_SERIES)
        return self.values[context.version]


@dataclass
class FakeClock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at


@dataclass
class World:
    """A reconciler wired to fakes, with the child Deployment as the watch would show it."""

    cluster: FakeCluster = field(default_factory=FakeCluster)
    resolver: FakeResolver = field(default_factory=FakeResolver)
    facts: FakeFacts = field(default_factory=FakeFacts)
    writes: FakeWrites | None = None  # None: write-back off
    write_grants: dict[str, list[str]] = field(default_factory=lambda: {"*": ["*"]})
    clock: FakeClock = field(default_factory=FakeClock)
    measurer: FakeMeasurer = field(default_factory=FakeMeasurer)
    scheduler: Scheduler[ResourceKey] = field(default_factory=Scheduler)

    def __post_init__(self) -> None:
        self.reconciler = Reconciler(
            Tracker(self.scheduler, self.resolver, self.cluster),
            self.resolver,
            facts=self.facts,
            children=self.cluster,
            reporter=self.cluster,
            clock=self.clock,
            defaults=ServingDefaults(image="serving:test", tracking_uri=TRACKING_URI),
            measurer=self.measurer,
            writes=self.writes,
            write_grants=self.write_grants,
            concurrency=4,
            status_refresh_seconds=300,
            retry_backoff_max_seconds=10,
        )

    def seen(self, uid: str = "uid-1", generation: int = 1, deleted: bool = False, **spec: Any):
        body = {
            "apiVersion": "aliasop.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {
                "name": KEY[1],
                "namespace": KEY[0],
                "uid": uid,
                "generation": generation,
            },
            "spec": {"model": "models:/bikes@champion", "replicas": 2, **spec},
        }
        stored = self.cluster.store(body, deleted)
        self.reconciler.resource_seen(stored, deleted=deleted, logger=log)

    def rolled_out(self, version: str) -> None:
        """The watch shows the last Deployment applied, with `version` rolled out."""
        applied = next(m for m in reversed(self.cluster.applied) if m["kind"] == "Deployment")
        deployment = {
            **applied,
            "metadata": {**applied["metadata"], "generation": 1},
            "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2},
        }
        deployment["spec"]["template"]["metadata"]["labels"][VERSION_LABEL] = version
        deployment["status"]["availableReplicas"] = 2
        self.reconciler.child_seen(deployment, deleted=False)

    def child(self, kind: str) -> dict[str, Any]:
        """The last `kind` applied, as the API server would show it."""
        applied = next(m for m in reversed(self.cluster.applied) if m["kind"] == kind)
        return {**applied, "metadata": {**applied["metadata"], "resourceVersion": "1"}}

    def status(self) -> ModelDeploymentStatus:
        tracked = self.reconciler.tracker.get(KEY)
        assert tracked is not None
        return tracked.status

    def reasons(self) -> list[str]:
        return [reason for _, reason in self.cluster.events]


async def test_a_pass_resolves_applies_the_children_and_reports() -> None:
    world = World()
    world.seen()
    assert world.reconciler.tracker.get(KEY) is not None and KEY in world.scheduler

    delay = await world.reconciler.run_pass(KEY)

    assert delay == 30  # the default pollIntervalSeconds
    assert [m["kind"] for m in world.cluster.applied] == ["Deployment", "Service"]
    assert world.cluster.versions_applied() == ["1"]
    owner = world.cluster.applied[0]["metadata"]["ownerReferences"][0]
    assert owner["uid"] == "uid-1"
    assert world.resolver.watching == {KEY: (TRACKING_URI, "bikes")}
    assert world.cluster.statuses[-1]["phase"] == "Progressing"
    assert world.cluster.statuses[-1]["history"][0]["startedAt"] == "2026-01-01T00:00:00Z"
    assert world.reasons() == ["RolloutStarted"]

    world.rolled_out("1")
    world.clock.at += timedelta(seconds=30)
    await world.reconciler.run_pass(KEY)
    assert world.status().phase is Phase.READY and world.status().serving_version == "1"
    assert world.reasons() == ["RolloutStarted", "RolloutSucceeded"]


async def test_api_errors_back_off_and_are_reported_from_the_third_in_a_row() -> None:
    world = World()
    world.seen()
    world.cluster.refuse = ApiError(503, "etcd leader changed")

    delays = [await world.reconciler.run_pass(KEY) for _ in range(2)]
    assert world.cluster.statuses == [] and world.cluster.events == []  # a blip: quiet
    delays.append(await world.reconciler.run_pass(KEY))
    assert len(world.cluster.statuses) == 1  # the third failure in a row is shown
    delays += [await world.reconciler.run_pass(KEY) for _ in range(3)]

    assert delays == [2.0, 4.0, 8.0, 10.0, 10.0, 10.0]  # doubling up to the maximum
    assert len(world.cluster.statuses) == 1  # once
    assert world.cluster.statuses[0]["phase"] == "Degraded"
    assert "etcd leader changed" in world.cluster.statuses[0]["message"]
    assert world.reasons() == ["KubernetesApiError"]

    world.cluster.refuse = None  # the API server is back: the next pass clears it
    assert await world.reconciler.run_pass(KEY) == 30
    degraded = world.status().condition(ConditionType.DEGRADED)
    assert degraded is not None and not degraded.is_true
    assert world.cluster.versions_applied() == ["1"]
    world.cluster.refuse = ApiUnreachable("connection refused")
    assert await world.reconciler.run_pass(KEY) == 2.0  # the count started again


async def test_a_resource_the_api_server_has_no_more_is_untracked() -> None:
    world = World()
    world.seen()
    await world.reconciler.run_pass(KEY)
    world.cluster.refuse = ApiError(
        404, 'modeldeployments "bikes" not found', missing=("modeldeployments", "bikes")
    )

    await world.reconciler.run_pass(KEY)

    assert world.reconciler.tracker.get(KEY) is None
    assert KEY not in world.scheduler
    assert world.resolver.watching == {}
    assert world.cluster.forgotten == [KEY]
    assert len(world.cluster.statuses) == 1  # nothing written for it after the 404


@pytest.mark.parametrize(
    "missing",
    [None, ("namespaces", "default"), ("modeldeployments", "another")],
    ids=["a 404 that names nothing", "another object", "another resource"],
)
async def test_a_404_about_anything_else_is_an_error_not_a_deletion(
    missing: tuple[str, str] | None,
) -> None:
    world = World()
    world.seen()
    await world.reconciler.run_pass(KEY)
    world.cluster.refuse = ApiError(404, "not found", missing=missing)

    delay = await world.reconciler.run_pass(KEY)

    assert world.reconciler.tracker.get(KEY) is not None
    assert KEY in world.scheduler
    assert delay > 0  # retried after a back-off


async def test_deleted_and_created_again_under_its_name_starts_afresh() -> None:
    world = World()
    world.seen(uid="uid-1")
    await world.reconciler.run_pass(KEY)
    world.rolled_out("1")
    await world.reconciler.run_pass(KEY)
    assert world.status().serving_version == "1"

    world.seen(uid="uid-2")  # kopf saw the old one go only as the new one's event
    assert world.cluster.forgotten == [KEY]  # the old children's applies are not trusted
    assert world.status() == ModelDeploymentStatus()
    world.reconciler.child_seen(world.child("Deployment"), deleted=True)  # went with its owner
    world.cluster.applied.clear()
    await world.reconciler.run_pass(KEY)

    assert world.cluster.applied[0]["metadata"]["ownerReferences"][0]["uid"] == "uid-2"
    assert [(h.version, h.reason) for h in world.status().history] == [("1", Reason.CREATED)]
    assert KEY in world.scheduler and world.resolver.watching == {KEY: (TRACKING_URI, "bikes")}


async def test_a_deleted_resource_leaves_nothing_tracked() -> None:
    world = World()
    world.seen()
    await world.reconciler.run_pass(KEY)

    world.seen(deleted=True)

    assert len(world.reconciler.tracker) == 0 and len(world.scheduler) == 0
    assert world.resolver.watching == {}
    assert world.cluster.forgotten == [KEY]
    world.seen(deleted=True)  # a second DELETED (a relist) is harmless
    assert world.cluster.forgotten == [KEY]


async def test_a_deployment_the_api_server_refuses_is_reported_once_not_retried() -> None:
    world = World()
    world.seen()
    world.cluster.refuse = ApiError(422, "spec.template.spec.containers[0].env[1].name: Required")

    delays = [await world.reconciler.run_pass(KEY) for _ in range(3)]

    assert delays == [30, 30, 30]  # checked again each interval, no back-off
    assert world.status().phase is Phase.DEGRADED
    assert "env[1].name: Required" in world.status().message
    assert world.reasons() == ["DeploymentRefused"]  # once; no RolloutStarted, nothing started
    assert world.status().history[0].outcome is Outcome.PROGRESSING  # retried when fixed


async def test_a_spec_change_is_picked_up_by_the_next_pass() -> None:
    world = World()
    world.seen(generation=1)
    await world.reconciler.run_pass(KEY)

    world.seen(generation=1, replicas=5)  # same generation: our own status write, ignored
    await world.reconciler.run_pass(KEY)
    assert world.cluster.applied[-2]["spec"]["replicas"] == 2
    world.seen(generation=2, replicas=5)
    await world.reconciler.run_pass(KEY)
    assert world.cluster.applied[-2]["spec"]["replicas"] == 5
    assert world.status().observed_generation == 2


async def test_an_invalid_spec_is_reported_once_and_nothing_applied() -> None:
    world = World()
    world.seen(model="not-a-model-uri")
    await world.reconciler.run_pass(KEY)
    await world.reconciler.run_pass(KEY)

    assert world.cluster.applied == []
    assert world.status().phase is Phase.DEGRADED
    assert world.status().message.startswith("invalid spec: model:")
    assert world.reasons() == ["InvalidSpec"]


async def test_a_registry_problem_keeps_the_deployment_and_says_why() -> None:
    world = World()
    world.seen()
    await world.reconciler.run_pass(KEY)
    world.rolled_out("1")
    world.resolver.answer = RegistryProblem(Reason.ALIAS_NOT_FOUND, "no alias 'champion'")
    applies = len(world.cluster.applied)

    assert await world.reconciler.run_pass(KEY) == 30

    assert len(world.cluster.applied) == applies  # the Deployment is left alone
    assert world.status().phase is Phase.DEGRADED
    assert world.reasons()[-1] == "AliasNotFound"


async def test_stop_untracks_everything() -> None:
    world = World()
    world.seen()
    world.reconciler.resource_seen(
        {"metadata": {"name": "other", "namespace": "ml", "uid": "u"}, "spec": {}},
        deleted=False,
        logger=log,
    )
    await world.reconciler.run_pass(KEY)

    world.reconciler.stop()

    assert len(world.reconciler.tracker) == 0 and len(world.scheduler) == 0
    assert world.resolver.watching == {}
    assert sorted(world.cluster.forgotten) == [("ml", "bikes"), ("ml", "other")]


async def test_a_child_deleted_or_edited_wakes_its_owner_and_is_applied_as_it_is_now() -> None:
    world = World()
    world.seen()
    await world.reconciler.run_pass(KEY)
    service = world.child("Service")
    world.reconciler.child_seen(service, deleted=False)
    world.rolled_out("1")
    await world.reconciler.run_pass(KEY)
    assert world.cluster.revisions[-1] == ("Service", "1")  # the cache may skip: as applied

    world.scheduler.start(world.reconciler.run_pass)  # now wakes run passes
    world.reconciler.child_seen(service, deleted=True)  # kubectl delete service bikes
    await world.cluster.until(lambda: world.cluster.revisions[-1] == ("Service", None))
    edited = {**service, "metadata": {**service["metadata"], "resourceVersion": "2"}}
    world.reconciler.child_seen(edited, deleted=False)  # kubectl edit service bikes
    await world.cluster.until(lambda: world.cluster.revisions[-1] == ("Service", "2"))
    world.reconciler.child_seen(world.child("Deployment"), deleted=True)
    await world.cluster.until(lambda: world.cluster.revisions[-2] == ("Deployment", None))
    world.scheduler.stop()


async def test_children_of_others_are_ignored() -> None:
    world = World()
    world.seen()
    stranger = {
        "kind": "Service",
        "metadata": {"name": "bikes", "namespace": "ml", "resourceVersion": "9"},
    }
    world.reconciler.child_seen(stranger, deleted=False)  # same name, no owner of ours
    await world.reconciler.run_pass(KEY)
    assert world.cluster.revisions[-1] == ("Service", None)


async def test_a_service_edited_beyond_a_merge_is_created_anew() -> None:
    world = World()
    world.seen()
    # A port changed by hand: the apply would add ours next to it, under the same name.
    world.cluster.refuse_once["Service"] = ApiError(422, 'spec.ports[1].name: Duplicate "http"')

    await world.reconciler.run_pass(KEY)

    assert world.cluster.deleted == ["Service"]
    assert world.cluster.revisions[-1] == ("Service", None)  # applied again, afresh
    assert world.status().phase is Phase.PROGRESSING  # not reported as a refusal
    assert world.reasons() == ["RolloutStarted"]


async def test_a_refused_deployment_is_reported_and_never_deleted() -> None:
    world = World()
    world.seen()
    world.cluster.refuse_once["Deployment"] = ApiError(422, "env[0].name: Required value")

    await world.reconciler.run_pass(KEY)

    assert world.cluster.deleted == []  # a refused Deployment is reported, never deleted
    assert world.status().message.startswith("the API server refused the Deployment: env[0]")


def inputs(*columns: str) -> str:
    return json.dumps([{"type": "double", "name": c, "required": True} for c in columns])


async def test_the_release_gates_hold_a_version_until_it_passes_them() -> None:
    world = World()
    world.seen(rollout={"requiredTags": {"validation_status": "approved"}})
    world.facts.tags["1"] = {"validation_status": "approved"}
    await world.reconciler.run_pass(KEY)
    world.rolled_out("1")
    await world.reconciler.run_pass(KEY)
    assert world.cluster.versions_applied()[-1] == "1"

    world.resolver.answer = ResolvedVersion("2", "run2")  # the alias moves to version 2 ...
    world.facts.signatures.update({"1": inputs("hour", "wind"), "2": inputs("hour")})
    await world.reconciler.run_pass(KEY)
    assert world.cluster.versions_applied()[-1] == "1"  # ... which drops a column: held
    assert world.status().phase is Phase.DEGRADED
    assert "column 'wind' (double) is gone" in world.status().message

    world.resolver.answer = ResolvedVersion("3", "run3")  # then to 3, which adds an option
    world.facts.signatures["3"] = json.dumps(
        [*json.loads(inputs("hour", "wind")), {"type": "long", "name": "x", "required": False}]
    )
    await world.reconciler.run_pass(KEY)
    assert world.cluster.versions_applied()[-1] == "1"  # compatible, but not approved yet
    assert "version 3 waits for approval" in world.status().message
    assert world.status().phase is Phase.READY

    world.facts.tags["3"] = {"validation_status": "approved"}
    await world.reconciler.run_pass(KEY)
    assert world.cluster.versions_applied()[-1] == "3"
    assert world.reasons()[-1] == "RolloutStarted"


async def test_a_registry_problem_of_the_gates_is_reported_as_one() -> None:
    world = World()
    world.seen(rollout={"requiredTags": {"stage": "prod"}})
    world.facts.problem = RegistryProblem(Reason.REGISTRY_ACCESS_DENIED, "HTTP 403")
    await world.reconciler.run_pass(KEY)
    assert world.cluster.applied == []
    assert world.status().phase is Phase.DEGRADED and world.status().message == "HTTP 403"


async def test_no_candidate_no_lookups() -> None:
    world = World()
    world.seen()
    await world.reconciler.run_pass(KEY)  # nothing serves yet: no signature to compare
    world.rolled_out("1")
    for _ in range(3):
        await world.reconciler.run_pass(KEY)
    assert world.facts.signature_lookups == 0


def stuck(world: World, version: str) -> None:
    """The watch shows `version`'s rollout past its progress deadline."""
    deployment = world.child("Deployment")
    deployment["metadata"]["generation"] = 1
    deployment["spec"]["template"]["metadata"]["labels"][VERSION_LABEL] = version
    deployment["status"] = {
        "observedGeneration": 1,
        "replicas": 3,
        "updatedReplicas": 1,
        "availableReplicas": 2,
        "conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}],
    }
    world.reconciler.child_seen(deployment, deleted=False)


async def test_the_registry_is_told_where_versions_serve_and_what_was_rolled_back() -> None:
    world = World(writes=FakeWrites())
    assert world.writes is not None
    world.seen(rollout={"onFailure": "RevertAlias"})
    await world.reconciler.run_pass(KEY)
    world.rolled_out("1")
    await world.reconciler.run_pass(KEY)
    assert world.writes.tags == {("1", "aliasop/ml/bikes"): "serving"}

    world.resolver.answer = ResolvedVersion("2", "run2")
    world.writes.pointing["champion"] = "2"
    await world.reconciler.run_pass(KEY)
    stuck(world, "2")
    await world.reconciler.run_pass(KEY)  # failed: rolled back, the alias moved back
    assert world.writes.aliases == [("champion", "1")]
    assert world.writes.tags[("2", "aliasop/ml/bikes")].startswith("rolled back: version 2")
    assert world.writes.tags[("1", "aliasop/ml/bikes")] == "serving"

    world.writes.deleted.clear()
    world.seen(deleted=True)  # gone: version 1 serves there no more
    await asyncio.wait_for(world.writes.deleted.wait(), 5)  # removed in the background
    assert ("1", "aliasop/ml/bikes") not in world.writes.tags


async def test_revert_alias_without_registry_writes_says_why_not() -> None:
    world = World()
    world.seen(rollout={"onFailure": "RevertAlias"})
    await world.reconciler.run_pass(KEY)
    world.rolled_out("1")
    await world.reconciler.run_pass(KEY)
    world.resolver.answer = ResolvedVersion("2", "run2")
    await world.reconciler.run_pass(KEY)
    stuck(world, "2")
    await world.reconciler.run_pass(KEY)
    assert world.reasons()[-1] == "AliasNotReverted"
    assert world.cluster.versions_applied()[-1] == "1"  # rolled back all the same


async def test_a_registry_that_refuses_the_writes_changes_nothing_that_serves() -> None:
    world = World(writes=FakeWrites(problem=RegistryProblem(Reason.REGISTRY_ACCESS_DENIED, "403")))
    world.seen()
    await world.reconciler.run_pass(KEY)
    world.rolled_out("1")
    assert await world.reconciler.run_pass(KEY) == 30
    assert world.status().phase is Phase.READY


async def test_replicas_left_out_of_the_spec_are_handed_over_not_reset() -> None:
    """kubernetes/kubernetes#67135: an apply that stops setting replicas would reset them to
    1; a hand-over apply keeps the count until whoever scales next takes it."""
    world = World()
    world.seen(generation=1, replicas=3)
    await world.reconciler.run_pass(KEY)
    deployment = world.child("Deployment")
    deployment["metadata"]["managedFields"] = [
        {
            "manager": "aliasop",
            "operation": "Apply",
            "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}},
        }
    ]
    deployment["metadata"]["generation"] = 1
    deployment["status"] = {"observedGeneration": 1, "replicas": 3}
    world.reconciler.child_seen(deployment, deleted=False)
    world.cluster.applied.clear()
    world.cluster.managers.clear()

    world.seen(generation=2, replicas=None)  # replicas handed to an HPA
    await world.reconciler.run_pass(KEY)

    assert world.cluster.managers[:2] == ["aliasop-replicas-handover", "aliasop"]
    assert world.cluster.applied[0]["spec"] == {"replicas": 3}
    assert "replicas" not in world.cluster.applied[1]["spec"]

    world.cluster.managers.clear()
    world.reconciler.child_seen(world.child("Deployment"), deleted=False)  # handed over
    await world.reconciler.run_pass(KEY)
    assert "aliasop-replicas-handover" not in world.cluster.managers  # once only


async def test_a_disruption_budget_is_kept_while_the_spec_asks_for_one_and_deleted_after() -> None:
    world = World()
    world.seen(serving={"disruptionBudget": {"minAvailable": "50%"}})
    await world.reconciler.run_pass(KEY)
    budget = world.child("PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == "50%"
    assert budget["spec"]["selector"] == world.child("Deployment")["spec"]["selector"]
    world.reconciler.child_seen(budget, deleted=False)

    world.seen(generation=2)  # the spec no longer asks for one
    await world.reconciler.run_pass(KEY)

    assert world.cluster.deleted == ["PodDisruptionBudget"]


async def test_no_disruption_budget_is_made_or_deleted_unless_asked_for() -> None:
    world = World()
    world.seen()
    await world.reconciler.run_pass(KEY)
    assert not any(m["kind"] == "PodDisruptionBudget" for m in world.cluster.applied)
    assert world.cluster.deleted == []


# --- canary strategy ------------------------------------------------------------------------

CANARY_SPEC: dict[str, Any] = {
    "replicas": 4,
    "rollout": {
        "strategy": "Canary",
        "steps": [
            {"setWeight": 25},
            {
                "analysis": {
                    "interval": 10,
                    "count": 2,
                    "metrics": [
                        {
                            "name": "score",
                            "web": {"url": "http://scorer/{{version}}", "jsonPath": "$.v"},
                            "thresholdRange": {"min": 0.8},
                        }
                    ],
                }
            },
        ],
    },
}


def _last_deployment(world: World, name: str) -> dict[str, Any]:
    return next(
        m
        for m in reversed(world.cluster.applied)
        if m["kind"] == "Deployment" and m["metadata"]["name"] == name
    )


def _watched(world: World, name: str) -> None:
    """The watch shows the last Deployment applied under `name` with every pod available."""
    applied = _last_deployment(world, name)
    replicas = applied["spec"]["replicas"]
    world.reconciler.child_seen(
        {
            **applied,
            "metadata": {**applied["metadata"], "generation": 1},
            "status": {
                "observedGeneration": 1,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "availableReplicas": replicas,
            },
        },
        deleted=False,
    )


async def _canary_of_2(world: World) -> None:
    """Version 1 serves at 4 replicas; the alias moves to 2."""
    world.seen(**CANARY_SPEC)
    await world.reconciler.run_pass(KEY)
    _watched(world, "bikes")
    await world.reconciler.run_pass(KEY)
    assert world.status().serving_version == "1"
    world.resolver.answer = ResolvedVersion("2", "run2")


async def test_a_canary_runs_beside_the_stable_side_and_its_analysis_is_measured() -> None:
    world = World()
    await _canary_of_2(world)

    await world.reconciler.run_pass(KEY)
    canary = world.cluster.applied[-1]
    assert (canary["metadata"]["name"], canary["spec"]["replicas"]) == ("bikes-canary", 1)
    assert canary["spec"]["selector"]["matchLabels"]["aliasop.io/variant"] == "canary"
    services = {m["metadata"]["name"] for m in world.cluster.applied if m["kind"] == "Service"}
    assert services == {"bikes", "bikes-stable", "bikes-canary"}
    stable = _last_deployment(world, "bikes")
    assert stable["spec"]["replicas"] == 4  # until the canary pod is available
    assert stable["spec"]["template"]["metadata"]["labels"]["aliasop.io/variant"] == "main"

    _watched(world, "bikes-canary")
    await world.reconciler.run_pass(KEY)
    stable = _last_deployment(world, "bikes")
    assert stable["spec"]["replicas"] == 3
    _watched(world, "bikes")
    world.measurer.values["2"] = 0.9
    delay = await world.reconciler.run_pass(KEY)  # the weight is there: the analysis starts
    state = world.status().canary
    assert state is not None and state.step == 2 and delay <= 0.5
    await world.reconciler.run_pass(KEY)  # its first measurement
    assert world.measurer.taken == [("score", "2")]
    stored = world.cluster.statuses[-1]["canary"]["analysis"]["metricResults"][0]
    assert (stored["count"], stored["measurements"][0]["value"]) == (1, 0.9)

    delay = await world.reconciler.run_pass(KEY)  # not due yet: nothing measured
    assert world.measurer.taken == [("score", "2")] and delay == 10
    world.clock.at += timedelta(seconds=10)
    await world.reconciler.run_pass(KEY)
    assert world.measurer.taken == [("score", "2"), ("score", "2")]
    assert world.cluster.versions_applied()[-1] == "2"  # promoted: the stable side moves
    assert "CanaryPromoted" in world.reasons()


async def test_a_canary_name_held_by_another_owner_is_left_alone_and_reported() -> None:
    world = World()
    await _canary_of_2(world)
    world.cluster.controllers[("Deployment", "bikes-canary")] = "uid-of-another"
    applied = len(world.cluster.applied)

    await world.reconciler.run_pass(KEY)

    assert len(world.cluster.applied) == applied  # nothing at all: the stable side unchanged
    assert world.status().phase is Phase.DEGRADED
    assert world.status().canary is None
    assert "bikes-canary exists and belongs to another owner" in world.status().message
    assert world.reasons()[-1] == "NameClash"


async def test_a_challenger_serves_its_own_alias_beside_the_main_one() -> None:
    world = World()
    world.resolver.by_alias["challenger"] = ResolvedVersion("7", "run7")
    world.seen(replicas=4, challenger={"alias": "challenger", "weight": 25})

    await world.reconciler.run_pass(KEY)
    side = _last_deployment(world, "bikes-challenger")
    assert side["spec"]["replicas"] == 1
    labels = side["spec"]["template"]["metadata"]["labels"]
    assert (labels["aliasop.io/variant"], labels[VERSION_LABEL]) == ("challenger", "7")
    main = _last_deployment(world, "bikes")
    assert main["spec"]["replicas"] == 4  # until the challenger's pod is available
    assert main["spec"]["template"]["metadata"]["labels"]["aliasop.io/variant"] == "main"
    services = {m["metadata"]["name"] for m in world.cluster.applied if m["kind"] == "Service"}
    assert services == {"bikes", "bikes-stable", "bikes-challenger"}

    _watched(world, "bikes-challenger")
    _watched(world, "bikes")
    await world.reconciler.run_pass(KEY)
    assert _last_deployment(world, "bikes")["spec"]["replicas"] == 3
    challenger = world.status().challenger
    assert challenger is not None and challenger.serving_version == "7"
    assert world.status().replicas == 5  # both sides' pods, as watched

    world.resolver.by_alias["challenger"] = ResolvedVersion("8", "run8")
    await world.reconciler.run_pass(KEY)
    assert (
        _last_deployment(world, "bikes-challenger")["spec"]["template"]["metadata"]["labels"][
            VERSION_LABEL
        ]
        == "8"
    )
    assert world.cluster.versions_applied().count("8") == 1  # the main side kept version 1
    assert "ChallengerMoved" in world.reasons()


# --- the status held is the API server's ------------------------------------------------


def _status_by_another(world: World, **fields: Any) -> None:
    """Another writer (the leader before this one) stores a status with `fields`."""
    cluster = world.cluster
    assert cluster.resource is not None
    status = ModelDeploymentStatus.model_validate(cluster.resource.get("status") or {})
    written = status.model_copy(update=fields).model_dump(by_alias=True, mode="json")
    cluster.resource_version += 1
    meta = {**cluster.resource["metadata"], "resourceVersion": str(cluster.resource_version)}
    cluster.resource = {**cluster.resource, "metadata": meta, "status": written}


OLDER_ROLLOUT = HistoryEntry(
    version="0",
    reason=Reason.CREATED,
    started_at=T0 - timedelta(days=1),
    finished_at=T0 - timedelta(days=1),
    outcome=Outcome.SUCCEEDED,
)


async def test_every_watch_event_refreshes_the_status_a_standby_holds() -> None:
    leader = World()
    standby = World(cluster=leader.cluster, resolver=leader.resolver)
    leader.seen()
    assert leader.cluster.resource is not None
    standby.reconciler.resource_seen(leader.cluster.resource, deleted=False, logger=log)
    await leader.reconciler.run_pass(KEY)
    leader.rolled_out("1")
    await leader.reconciler.run_pass(KEY)

    # The watch shows the leader's status writes to the standby, which never passes.
    standby.reconciler.resource_seen(leader.cluster.resource, deleted=False, logger=log)

    assert standby.status() == leader.status()
    assert standby.status().serving_version == "1" and standby.status().history


async def test_an_event_older_than_our_last_status_write_changes_nothing() -> None:
    world = World()
    world.seen()
    assert world.cluster.resource is not None
    before_the_write = world.cluster.resource  # empty status, an older resourceVersion
    await world.reconciler.run_pass(KEY)
    written = world.status()
    assert written.history

    # The watch shows events in order, ours later: one from before the write comes first.
    world.reconciler.resource_seen(before_the_write, deleted=False, logger=log)

    assert world.status() == written
    world.reconciler.resource_seen(world.cluster.resource, deleted=False, logger=log)
    assert world.status() == written  # the echo of the write itself


async def test_a_replica_that_becomes_leader_reads_the_status_afresh() -> None:
    leader = World()
    standby = World(cluster=leader.cluster, resolver=leader.resolver)
    leader.seen()
    assert leader.cluster.resource is not None
    standby.reconciler.resource_seen(leader.cluster.resource, deleted=False, logger=log)
    await leader.reconciler.run_pass(KEY)
    leader.rolled_out("1")
    await leader.reconciler.run_pass(KEY)
    history = leader.status().history
    # The standby's watch lags: it has seen the Deployment, not the leader's status writes.
    standby.rolled_out("1")
    assert standby.status().history == []

    standby.reconciler.read_afresh()  # it has become the leader
    await standby.reconciler.run_pass(KEY)

    assert leader.cluster.reads == 1
    assert standby.status().history == history  # not a rollout of version 1 "adopted"
    assert standby.status().serving_version == "1"
    await standby.reconciler.run_pass(KEY)
    assert leader.cluster.reads == 1  # once, on taking over


async def test_a_status_write_never_drops_what_another_writer_recorded() -> None:
    world = World()
    world.seen()
    await world.reconciler.run_pass(KEY)
    world.rolled_out("1")
    world.clock.at += timedelta(seconds=30)
    writes = len(world.cluster.statuses)
    original = world.cluster.patch_status

    async def another_writes_first(*args: Any, **kwargs: Any) -> str | None:
        world.cluster.patch_status = original  # type: ignore[method-assign]
        _status_by_another(world, history=[*world.status().history, OLDER_ROLLOUT])
        return await original(*args, **kwargs)

    world.cluster.patch_status = another_writes_first  # type: ignore[method-assign]
    assert await world.reconciler.run_pass(KEY) == 30

    assert world.cluster.reads == 1  # the refused write made it read the object afresh
    assert len(world.cluster.statuses) == writes + 1  # the second decision was written
    stored = world.cluster.statuses[-1]
    assert [h["version"] for h in stored["history"]] == ["1", "0"]
    assert stored["history"][0]["outcome"] == "Succeeded" and stored["servingVersion"] == "1"
    assert world.reasons() == ["RolloutStarted", "RolloutSucceeded"]  # posted once


async def test_a_status_write_refused_again_and_again_is_retried_by_a_later_pass() -> None:
    world = World()
    world.seen()
    original = world.cluster.patch_status

    async def always_another_first(*args: Any, **kwargs: Any) -> str | None:
        _status_by_another(world)
        return await original(*args, **kwargs)

    world.cluster.patch_status = always_another_first  # type: ignore[method-assign]
    delay = await world.reconciler.run_pass(KEY)

    assert 0 < delay < 30  # soon, not after a back-off for an API failure
    assert world.cluster.statuses == [] and world.cluster.events == []
    tracked = world.reconciler.tracker.get(KEY)
    assert tracked is not None and tracked.stale and tracked.failures == 0
