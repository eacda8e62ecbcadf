"""kopf's decorators, and nothing else: kopf logs in and watches; each handler hands off.

ModelDeployment events go to `Reconciler.resource_seen`, those of the children Deployments
and Services to `Reconciler.child_seen`; what a pass does is aliasop.reconciler's.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from aliasop.builders import MANAGED_BY
from aliasop.models import GROUP, MANAGED_BY_LABEL, PLURAL, VERSION
from aliasop.runtime import Runtime


@kopf.on.login()
async def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """The pod's service account, else the kubeconfig ($KUBECONFIG or ~/.kube/config); kopf
    and aliasop's own calls (kube.Cluster) share these credentials, renewed at each re-login."""

    def login_afresh() -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    info = login_afresh()
    if info is not None:
        # aliasop's calls log in afresh on a 401 too (a rotated token), as kopf's do.
        memo.runtime.cluster.connect(info, relogin=login_afresh)
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
    # Events kopf would post (kopf.event; before kopf 1.41 also handlers' log messages, event
    # handlers' excepted) are unfenced writes, a standby's too. aliasop posts its own through
    # kube.Cluster, behind the leader's fence.
    settings.posting.enabled = False
    # The API server filters the watches: a shard receives its own resources and their
    # children only, and no operator the Deployments and Services of others.
    selector = memo.runtime.settings.watch_label_selector
    settings.watching.label_selectors[GROUP, PLURAL] = selector
    children = ",".join(filter(None, [f"{MANAGED_BY_LABEL}={MANAGED_BY}", selector]))
    settings.watching.label_selectors["apps", "deployments"] = children
    settings.watching.label_selectors["v1", "services"] = children
    settings.watching.label_selectors["policy", "poddisruptionbudgets"] = children
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per MLflow request
    logging.getLogger("kopf.objects").addFilter(_not_event_handled)
    await memo.runtime.start()


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.runtime.stop()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def modeldeployment_event(
    event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """No finalizer: the children are the owner's (ownerReferences), so deleting a
    ModelDeployment never waits for the operator."""
    runtime: Runtime = memo.runtime
    runtime.reconciler.resource_seen(body, deleted=event["type"] == "DELETED", logger=logger)


# Async handlers run on the event loop, where the scheduler's timers live (they are not
# thread-safe); kopf runs sync ones in threads.
@kopf.on.event("apps", "v1", "deployments", labels={MANAGED_BY_LABEL: MANAGED_BY})
@kopf.on.event("", "v1", "services", labels={MANAGED_BY_LABEL: MANAGED_BY})
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels={MANAGED_BY_LABEL: MANAGED_BY})
async def child_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Whose the child is (what aliasop may write, kube.Cluster), then its owner's pass."""
    deleted = event["type"] == "DELETED"
    memo.runtime.cluster.seen(body, deleted=deleted)
    memo.runtime.reconciler.child_seen(body, deleted=deleted)


def _not_event_handled(record: logging.LogRecord) -> bool:
    """kopf logs each run of an event handler that succeeds: one line for every watch event,
    our own status writes and applies included."""
    return not (record.msg.startswith("Handler '") and record.msg.endswith("_event' succeeded."))
