"""Rollout notifications, delivered to a real HTTP receiver on loopback: signed, once each,
retried after a failure, never holding a pass up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from aliasop.notices import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Receiver,
)
from aliasop.notifier import Notifier, NotifyingReporter, load_receivers
from aliasop.webhooks import sign

pytestmark = pytest.mark.timeout(20)
AT = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
RESOURCE = {
    "metadata": {"namespace": "ml", "name": "bikes", "uid": "u1"},
    "spec": {"model": "models:/bikes@champion"},
}
KEY = "s3cr3t"


class LoopbackReceiver:
    """An HTTP server on 127.0.0.1 that answers each request with the next status given
    (then 200), and keeps what it got."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.got: list[tuple[Mapping[str, str], bytes]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


@pytest.fixture
async def receiver(request: pytest.FixtureRequest) -> AsyncIterator[LoopbackReceiver]:
    loopback = LoopbackReceiver(list(getattr(request, "param", [])))  # statuses to answer
    app = web.Application()
    app.router.add_post("/hook", loopback.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    loopback.url = f"http://127.0.0.1:{port}/hook"
    yield loopback
    await runner.cleanup()


class FakeReporter:
    def __init__(self) -> None:
        self.events: list[str] = []

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        pass

    async def post_event(
        self, involved: Mapping[str, Any], kind: str, reason: str, message: str, at: datetime
    ) -> None:
        self.events.append(reason)


def count(receiver: str, result: str) -> float:
    value = REGISTRY.get_sample_value(
        "aliasop_notifications_total", {"receiver": receiver, "result": result}
    )
    return value or 0.0


async def notify_all(notifier: Notifier, reasons: list[str]) -> FakeReporter:
    inner = FakeReporter()
    reporter = NotifyingReporter(inner, notifier)
    notifier.start()
    for reason in reasons:
        await reporter.post_event(RESOURCE, "Normal", reason, f"{reason} of version 4", AT)
    await asyncio.wait_for(notifier.drained(), 10)
    await notifier.aclose()
    return inner


async def test_each_event_arrives_once_signed_as_mlflow_signs(receiver: LoopbackReceiver) -> None:
    hook = Receiver(name="team", url=receiver.url, signingKey=KEY)
    reasons = [
        "RolloutStarted",
        "CanaryStep",
        "WaitingForApproval",
        "CanaryAborted",
        "RolloutFailed",
        "RolloutSucceeded",
        "AliasMoved",  # not a notice
    ]
    inner = await notify_all(Notifier([hook]), reasons)
    assert inner.events == reasons  # every Event is still posted
    types = []
    for headers, payload in receiver.got:
        expected = sign(
            KEY, headers[DELIVERY_ID_HEADER], headers[TIMESTAMP_HEADER], payload.decode()
        )
        assert headers[SIGNATURE_HEADER] == expected
        message = json.loads(payload)
        assert message["id"] == headers[DELIVERY_ID_HEADER]
        assert message["resource"] == {
            "namespace": "ml",
            "name": "bikes",
            "uid": "u1",
            "model": "models:/bikes@champion",
        }
        assert message["time"] == "2026-12-07T12:00:00Z"
        types.append(message["type"])
    assert types == [
        "rollout.started",
        "canary.step",
        "rollout.held",
        "rollout.aborted",
        "rollout.failed",
        "rollout.succeeded",
    ]


@pytest.mark.parametrize("receiver", [[503, 500]], indirect=True)
async def test_a_failed_delivery_is_retried_with_back_off(receiver: LoopbackReceiver) -> None:
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    before = count("retried", "delivered")
    hook = Receiver(name="retried", url=receiver.url, signingKey=KEY)
    await notify_all(Notifier([hook], sleep=no_wait), ["RolloutFailed"])
    assert waits == [1.0, 2.0]
    ids = {headers[DELIVERY_ID_HEADER] for headers, _ in receiver.got}
    assert len(receiver.got) == 3 and len(ids) == 1  # the same delivery, sent again
    assert count("retried", "delivered") == before + 1


@pytest.mark.parametrize("receiver", [[400]], indirect=True)
async def test_a_refusal_is_final(receiver: LoopbackReceiver) -> None:
    before = count("refusing", "refused")
    hook = Receiver(name="refusing", url=receiver.url)
    await notify_all(Notifier([hook]), ["RolloutFailed"])
    assert len(receiver.got) == 1
    assert SIGNATURE_HEADER not in receiver.got[0][0]  # no key, no signature
    assert count("refusing", "refused") == before + 1


async def test_slack_body_and_event_filter(receiver: LoopbackReceiver) -> None:
    hook = Receiver(name="slack", url=receiver.url, format="slack", events=["rollout.failed"])
    await notify_all(Notifier([hook]), ["RolloutStarted", "RolloutFailed"])
    assert [json.loads(body) for _, body in receiver.got] == [
        {"text": "[ml/bikes] rollout.failed: RolloutFailed of version 4"}
    ]


async def test_an_unreachable_receiver_never_holds_up_the_pass() -> None:
    blocked = asyncio.Event()

    async def wait_forever(seconds: float) -> None:
        await blocked.wait()

    hook = Receiver(name="down", url="http://127.0.0.1:9/hook")
    notifier = Notifier([hook], sleep=wait_forever)
    reporter = NotifyingReporter(FakeReporter(), notifier)
    notifier.start()
    # Returns although the receiver never answers: the delivery waits in the background.
    await asyncio.wait_for(reporter.post_event(RESOURCE, "Normal", "RolloutFailed", "x", AT), 1)
    await notifier.aclose()


def test_receivers_file(tmp_path: Any) -> None:
    listed = tmp_path / "receivers.yaml"
    listed.write_text(
        "receivers:\n- name: team\n  url: https://hooks.example/x\n  signingKey: k\n"
        "  format: slack\n"
    )
    [team] = load_receivers(str(listed))
    assert (team.name, team.format, team.signing_key.get_secret_value()) == ("team", "slack", "k")
    assert load_receivers("") == []
