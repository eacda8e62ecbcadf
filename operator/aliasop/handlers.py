"""kopf's decorators, and nothing else: kopf logs in and watches; each handler hands off.

ModelDeployment events go to `Reconciler.resource_seen`, changes of the children
Deployments wake their owner's pass; what a pass does is aliasop.reconciler's.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from aliasop.interfaces import ResourceKey
from aliasop.models import GROUP, PLURAL, VERSION
from aliasop.rollout import ObservedDeployment, observe_deployment
from aliasop.runtime import Runtime


@kopf.on.login()
async def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """The pod's service account, else the kubeconfig ($KUBECONFIG or ~/.kube/config); kopf
    and aliasop's own calls (kube.Cluster) share these credentials, renewed at each re-login."""
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is not None:
        memo.runtime.cluster.connect(info)
    return info


class _NoDiffBase(kopf.DiffBaseStorage):
    """kopf deep-copies each watched object at each event to diff it for change handlers;
    there are none here (only event and index handlers), so there is nothing to diff."""

    def build(self, **_: Any) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, **_: Any) -> None:
        return None

    def store(self, **_: Any) -> None:
        pass


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.diffbase_storage = _NoDiffBase()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per MLflow request
    logging.getLogger("kopf.objects").addFilter(_not_event_handled)
    await memo.runtime.start()


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.runtime.stop()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def modeldeployment_event(
    event: kopf.RawEvent,
    body: kopf.Body,
    memo: kopf.Memo,
    deployments: kopf.Index[ResourceKey, ObservedDeployment],
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """No finalizer: the children are the owner's (ownerReferences), so deleting a
    ModelDeployment never waits for the operator."""
    runtime: Runtime = memo.runtime
    runtime.deployments.index = deployments  # the same index every time
    runtime.reconciler.resource_seen(body, deleted=event["type"] == "DELETED", logger=logger)


def _not_event_handled(record: logging.LogRecord) -> bool:
    """kopf logs each run of an event handler that succeeds: one line for every watch event
    of every ModelDeployment, our own status writes included."""
    return record.msg != "Handler 'modeldeployment_event' succeeded."


@kopf.index("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": "aliasop"})
async def deployments(
    namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> dict[ResourceKey, ObservedDeployment]:
    """The children Deployments as the watch last saw them (only what decisions read, to keep
    memory flat at many resources), so passes need not read them. (Async, so that it runs on
    the event loop: the scheduler's timers are not thread-safe.)"""
    memo.runtime.reconciler.deployment_changed((namespace, name))  # named after its owner
    return {(namespace, name): observe_deployment(body)}
