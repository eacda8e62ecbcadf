"""Sends notices (aliasop.notices) to the operator's webhook receivers.

A pass never waits for a receiver: each notice is queued, and each receiver has its own queue
and sender, so a slow one delays nobody else. A delivery that fails on the network, a 429 or a
5xx is sent again after a back-off (doubling, a few times); a receiver's other refusals are
final. A full queue drops the notice (counted). Wired in by `runtime` as a Reporter around the
cluster's: each Event a pass posts is offered to the receivers too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from aliasop import __version__
from aliasop.interfaces import Reporter
from aliasop.metrics import NOTIFICATIONS
from aliasop.notices import NOTICES, Receiver, Receivers, body, message, signed_headers

QUEUE_LIMIT = 1000  # notices waiting per receiver; more are dropped
ATTEMPTS = 5
TIMEOUT_SECONDS = 5.0
_log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


def load_receivers(path: str) -> list[Receiver]:
    """The receivers listed in the file the chart's Secret mounts (YAML or JSON); none for
    an empty path."""
    if not path:
        return []
    return Receivers.model_validate(yaml.safe_load(Path(path).read_text()) or {}).receivers


class Notifier:
    def __init__(
        self,
        receivers: list[Receiver],
        *,
        first_backoff_seconds: float = 1.0,
        sleep: Sleep = asyncio.sleep,
        timeout_seconds: float = TIMEOUT_SECONDS,
    ) -> None:
        self._receivers = receivers
        self._queues: dict[str, asyncio.Queue[tuple[str, str]]] = {
            r.name: asyncio.Queue(QUEUE_LIMIT) for r in receivers
        }
        for receiver in receivers:  # a series per result from the start, for rates and alerts
            for result in ("delivered", "refused", "failed", "dropped"):
                NOTIFICATIONS.labels(receiver=receiver.name, result=result)
        self._first_backoff = first_backoff_seconds
        self._sleep = sleep
        self._http = httpx.AsyncClient(timeout=timeout_seconds, follow_redirects=False)
        self._senders: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._senders = [
            asyncio.create_task(self._send_all(r), name=f"notifications to {r.name}")
            for r in self._receivers
        ]

    async def aclose(self) -> None:
        for sender in self._senders:
            sender.cancel()
        for sender in self._senders:
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        await self._http.aclose()

    async def drained(self) -> None:
        """Wait until every queued notice has been delivered or given up (tests, shutdown)."""
        for queue in self._queues.values():
            await queue.join()

    def notify(self, involved: Mapping[str, Any], reason: str, text: str, at: datetime) -> None:
        """Queue the notice an Event of `reason` makes, for the receivers that want it; at
        once (never waits)."""
        notice = NOTICES.get(str(reason))
        if notice is None:
            return
        delivery_id = str(uuid.uuid4())
        payload = message(notice, dict(involved), str(reason), text, at, delivery_id, __version__)
        for receiver in self._receivers:
            if not receiver.wants(notice):
                continue
            try:
                self._queues[receiver.name].put_nowait((delivery_id, body(receiver, payload)))
            except asyncio.QueueFull:
                NOTIFICATIONS.labels(receiver=receiver.name, result="dropped").inc()
                _log.warning(f"notification to {receiver.name} dropped: its queue is full")

    async def _send_all(self, receiver: Receiver) -> None:
        queue = self._queues[receiver.name]
        while True:
            delivery_id, text = await queue.get()
            try:
                NOTIFICATIONS.labels(
                    receiver=receiver.name, result=await self._deliver(receiver, delivery_id, text)
                ).inc()
            finally:
                queue.task_done()

    async def _deliver(self, receiver: Receiver, delivery_id: str, text: str) -> str:
        """Deliver one message, with retries; returns how it ended (delivered, refused,
        failed)."""
        backoff = self._first_backoff
        problem = ""
        for attempt in range(1, ATTEMPTS + 1):
            headers = signed_headers(receiver, delivery_id, int(time.time()), text)
            try:
                answer = await self._http.post(receiver.url, content=text, headers=headers)
            except httpx.HTTPError as exc:
                problem = f"no answer ({type(exc).__name__})"
            else:
                if answer.status_code < 300:
                    return "delivered"
                problem = f"HTTP {answer.status_code}"
                if answer.status_code != 429 and answer.status_code < 500:
                    _log.warning(f"notification to {receiver.name} refused: {problem}")
                    return "refused"
            if attempt < ATTEMPTS:
                await self._sleep(backoff)
                backoff *= 2
        _log.warning(f"notification to {receiver.name} failed {ATTEMPTS} times: {problem}")
        return "failed"


class NotifyingReporter:
    """A Reporter that also offers each Event to the notifier."""

    def __init__(self, reporter: Reporter, notifier: Notifier) -> None:
        self._reporter = reporter
        self._notifier = notifier

    async def patch_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> str | None:
        return await self._reporter.patch_status(namespace, name, status, resource_version)

    async def read_resource(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._reporter.read_resource(namespace, name)

    async def post_event(
        self, involved: Mapping[str, Any], kind: str, reason: str, message: str, at: datetime
    ) -> None:
        self._notifier.notify(involved, reason, message, at)
        await self._reporter.post_event(involved, kind, reason, message, at)
