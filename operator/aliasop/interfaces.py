"""The small interfaces a reconciliation pass works through, and the errors they raise.

The real ones are wired in `runtime.build_runtime`: `kube.Cluster` (children, status and
Events), `watcher.AliasWatcher` (resolver), `clock.SystemClock`. Unit tests pass fakes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from aliasop.analysis_models import AnalysisMetric
from aliasop.builders import ADOPT_ANNOTATION
from aliasop.models import KIND, ModelUri, ResolvedVersion
from aliasop.signatures import Unreadable
from aliasop.templating import TemplateContext

ResourceKey = tuple[str, str]  # (namespace, name) of a ModelDeployment
ModelKey = tuple[str, str]  # (tracking URI, registered model name)


class ApiError(Exception):
    """The Kubernetes API server answered with an error status."""

    def __init__(self, status: int, message: str, missing: tuple[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        # What a 404 says is missing, (resource plural, name), from its Status's details;
        # None when the answer does not say (a proxy's 404, a path not served).
        self.missing = missing


class NotLeading(Exception):
    """A write refused before it was sent: this replica does not hold the leader Lease."""


class ApiUnreachable(ConnectionError):
    """The Kubernetes API server gave no answer (connection refused or cut, timeout)."""


class NameClash(Exception):
    """A child's name is held by an object this ModelDeployment does not control: aliasop
    neither changes nor deletes it. The message, for status and an Event, names the object
    and its holder: both in the resource's own namespace, nothing of another's."""

    def __init__(self, kind: str, name: str, holder: str, owner: str) -> None:
        """`holder`: the kind and name of the object's controller ("" when nothing controls
        it); `owner`: the name of the ModelDeployment that wanted the name."""
        if holder == f"{KIND} {owner}":  # another uid: one deleted, and this one made anew
            held = f"an earlier {holder} (deleted)"
            ways = "The garbage collector deletes it shortly; then aliasop makes its own"
        elif holder:
            held = f"another owner ({holder})"
            ways = "Rename or delete it, or rename this resource"
        else:
            held = "no owner (made by hand?)"
            ways = (
                "Rename or delete it, rename this resource, or hand it over with the "
                f"annotation {ADOPT_ANNOTATION}={owner} on it"
            )
        super().__init__(
            f"the {kind} {name} exists and belongs to {held}: aliasop leaves it alone. {ways}"
        )


class Children(Protocol):
    """The Deployments, Services and PodDisruptionBudget a ModelDeployment owns."""

    async def apply(
        self, manifest: dict[str, Any], current_revision: str | None, field_manager: str = ...
    ) -> None:
        """Server-side apply (as aliasop's field manager unless told); may skip it when the
        object is still as the last apply of the same manifest left it (`current_revision`,
        see builders.get_child_revision; None: the object does not exist). Raises NameClash
        (see `claim`), ApiError or ApiUnreachable."""

    async def delete(self, manifest: dict[str, Any]) -> None:
        """Delete the object `manifest` names; one already gone is fine. Raises NameClash
        when it is not controlled by the manifest's controller."""

    async def claim(self, manifest: dict[str, Any]) -> None:
        """Raises NameClash unless the object `manifest` names may be applied: it is absent,
        controlled by the manifest's controller (its ModelDeployment), or handed over to it
        (ADOPT_ANNOTATION). `apply` and `delete` check the same themselves (`delete` takes no
        handover): this lets a pass check all its children before it writes any."""

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is remembered of the last applies for the children of this resource."""


class Reporter(Protocol):
    """Where a pass reports: the resource's status subresource, and Events about it; and
    where it reads the resource afresh."""

    async def patch_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> str | None:
        """Returns the resourceVersion stored; raises ApiError 409 when `resource_version` is
        given and the object has changed since."""
        ...

    async def read_resource(self, namespace: str, name: str) -> dict[str, Any]:
        """The ModelDeployment as the API server has it now."""
        ...

    async def post_event(
        self,
        involved: Mapping[str, Any],
        kind: str,
        reason: str,
        message: str,
        at: datetime,
    ) -> None: ...


class ReleaseFacts(Protocol):
    """What the release gates read of a model version in the registry."""

    async def version_tags(self, tracking_uri: str, name: str, version: str) -> dict[str, str]:
        """Its tags as they are now."""
        ...

    async def signature_inputs(
        self, tracking_uri: str, name: str, version: str
    ) -> str | Unreadable | None:
        """Its MLmodel's `signature.inputs`; None without a signature; Unreadable when the
        registry cannot show its MLmodel."""
        ...


class RegistryWrites(Protocol):
    """What the operator tells the registry (ALIASOP_REGISTRY_WRITE_BACK)."""

    async def set_version_tag(
        self, tracking_uri: str, name: str, version: str, key: str, value: str
    ) -> None: ...

    async def delete_version_tag(
        self, tracking_uri: str, name: str, version: str, key: str
    ) -> None: ...

    async def set_alias(self, tracking_uri: str, name: str, alias: str, version: str) -> None: ...

    async def alias_version(self, tracking_uri: str, name: str, alias: str) -> str | None:
        """Where the alias points now, read afresh; None when it does not exist."""
        ...


class Resolver(Protocol):
    """Alias -> version. `watch` says which model each tracked resource needs resolved and
    how often; `unwatch` forgets a resource; `model_changed` is a webhook's news."""

    def watch(self, resource: ResourceKey, model: ModelKey, interval: float) -> None: ...

    def unwatch(self, resource: ResourceKey) -> None: ...

    async def resolve(self, tracking_uri: str, uri: ModelUri) -> ResolvedVersion:
        """Raises RegistryProblem when there is no servable version."""
        ...

    async def model_changed(self, model: str, aliases: bool) -> int:
        """`model` changed (its `aliases`, or else its versions): act on it wherever it is
        watched; returns how many watches."""
        ...


class MetricProvider(Protocol):
    """Takes one measurement of an analysis metric (analysis_providers.HttpMetricProvider)."""

    async def measure(self, metric: AnalysisMetric, context: TemplateContext) -> float:
        """The number `metric` gives now, its query or URL filled in from `context`. Raises
        analysis.MeasurementError when there is none: the provider could not be reached, or
        answered something that is not one number."""
        ...
