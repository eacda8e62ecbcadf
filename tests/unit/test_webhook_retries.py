"""Webhook deliveries that fail are taken again when MLflow retries them; malformed headers
are refused with 400 or 401 before the body is read, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_endpoints import Leadership, Registry, verifier
from test_webhook_signatures import NOW, delivery

from aliasop.endpoints import WEBHOOK_PATH, build_app
from aliasop.webhooks import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Rejection,
    WebhookRejected,
)

pytestmark = pytest.mark.timeout(20)


class FailingOnce(Registry):
    """A leader whose first attempt to act on a delivery fails (a 500)."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    async def model_changed(self, model: str, aliases: bool) -> int:
        self.attempts += 1
        if self.attempts == 1:
            raise RuntimeError("the first attempt fails")
        return await super().model_changed(model, aliases)


@pytest.fixture
async def failing_leader() -> AsyncIterator[tuple[TestClient[Any, Any], FailingOnce]]:
    registry = FailingOnce()
    app = build_app(registry.model_changed, verifier(), Leadership(leading=True))
    async with TestClient(TestServer(app)) as client:
        yield client, registry


async def test_a_retry_after_a_500_is_acted_on_and_then_refused_as_a_replay(
    failing_leader: tuple[TestClient[Any, Any], FailingOnce],
) -> None:
    client, registry = failing_leader
    headers, body = delivery("d-retried")

    first = await client.post(WEBHOOK_PATH, data=body, headers=headers)
    retry = await client.post(WEBHOOK_PATH, data=body, headers=headers)
    replay = await client.post(WEBHOOK_PATH, data=body, headers=headers)

    assert (first.status, retry.status, replay.status) == (500, 200, 401)
    assert registry.changed == [("bikes", True)]
    assert "replayed" in (await replay.json())["error"]


async def test_a_standby_takes_the_retry_of_a_delivery_it_answered_503() -> None:
    """The leader was away: the standby answered 503; MLflow's retry reaches the standby
    again once the leader is back, and is passed on, not refused as a replay."""
    leading = Registry()
    leader_app = build_app(leading.model_changed, verifier(), Leadership(leading=True))
    standby_verifier = verifier()
    standby = Leadership(leading=False, leader_url=None)
    standby_app = build_app(Registry().model_changed, standby_verifier, standby)
    headers, body = delivery("d-standby")
    async with (
        TestClient(TestServer(leader_app)) as leader,
        TestClient(TestServer(standby_app)) as client,
    ):
        first = await client.post(WEBHOOK_PATH, data=body, headers=headers)
        standby.leader_url = str(leader.make_url(WEBHOOK_PATH))
        retry = await client.post(WEBHOOK_PATH, data=body, headers=headers)
        replay = await client.post(WEBHOOK_PATH, data=body, headers=headers)

    assert (first.status, retry.status, replay.status) == (503, 200, 401)
    assert leading.changed == [("bikes", True)]


SIGNED_HEADERS = delivery("d-malformed")[0]
MALFORMED: list[tuple[str, dict[str, str], int]] = [
    ("nan-timestamp", {**SIGNED_HEADERS, TIMESTAMP_HEADER: "nan"}, 400),
    ("inf-timestamp", {**SIGNED_HEADERS, TIMESTAMP_HEADER: "inf"}, 400),
    ("negative-timestamp", {**SIGNED_HEADERS, TIMESTAMP_HEADER: "-1"}, 400),
    ("huge-timestamp", {**SIGNED_HEADERS, TIMESTAMP_HEADER: "9" * 400}, 400),
    ("non-ascii-id", {**SIGNED_HEADERS, DELIVERY_ID_HEADER: "d-\u00e9t\u00e9"}, 400),
    ("non-ascii-signature", {**SIGNED_HEADERS, SIGNATURE_HEADER: "v1,\u00ff\u00ff"}, 400),
    ("huge-id", {**SIGNED_HEADERS, DELIVERY_ID_HEADER: "d" * 5000}, 400),
    ("empty-id", {**SIGNED_HEADERS, DELIVERY_ID_HEADER: ""}, 401),
]


@pytest.mark.parametrize(
    ("case", "headers", "status"), MALFORMED, ids=[case for case, _, _ in MALFORMED]
)
async def test_malformed_headers_get_400_or_401_never_500(
    failing_leader: tuple[TestClient[Any, Any], FailingOnce],
    case: str,
    headers: dict[str, str],
    status: int,
) -> None:
    client, registry = failing_leader
    # Header values as bytes on the wire: UTF-8, which the server reads as it can.
    wire = {name: value.encode().decode("latin-1") for name, value in headers.items()}
    response = await client.post(WEBHOOK_PATH, data=delivery("d-malformed")[1], headers=wire)
    assert response.status == status
    assert registry.attempts == 0


def test_the_headers_are_judged_without_the_body() -> None:
    """check_headers takes no body: a delivery refused for its headers costs no body read."""
    check = verifier()
    headers, _ = delivery("d-early", sent_at=NOW - 3600)
    with pytest.raises(WebhookRejected) as raised:
        check.check_headers(headers)
    assert raised.value.reason is Rejection.STALE


async def test_a_refused_delivery_s_body_is_not_read(
    failing_leader: tuple[TestClient[Any, Any], FailingOnce],
) -> None:
    """A stale delivery with a body far larger than the server takes (1 MiB): refused for
    its headers (401), where reading the body would have answered 413."""
    client, _ = failing_leader
    headers, _ = delivery("d-big", sent_at=NOW - 3600)
    response = await client.post(WEBHOOK_PATH, data=b"x" * (4 * 1024 * 1024), headers=headers)
    assert response.status == 401
