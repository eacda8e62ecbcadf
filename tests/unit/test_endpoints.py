"""The webhook endpoint of a leader and of a standby, in-process over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_webhook_signatures import NOW, SECRET, delivery

from aliasop.endpoints import FORWARDED_HEADER, WEBHOOK_PATH, build_app
from aliasop.webhooks import DeliveryVerifier


@dataclass
class Leadership:
    leading: bool
    leader_url: str | None = None


class Registry:
    def __init__(self) -> None:
        self.changed: list[tuple[str, bool]] = []

    async def model_changed(self, model: str, aliases: bool) -> int:
        self.changed.append((model, aliases))
        return 1


def verifier() -> DeliveryVerifier:
    return DeliveryVerifier(SECRET, tolerance_seconds=300, now=lambda: NOW)


@pytest.fixture
async def leader() -> AsyncIterator[tuple[TestClient[Any, Any], Registry]]:
    registry = Registry()
    app = build_app(registry.model_changed, verifier(), Leadership(leading=True))
    async with TestClient(TestServer(app)) as client:
        yield client, registry


async def standby_answer(leader_url: str | None, headers: dict[str, str], body: bytes) -> Any:
    registry = Registry()
    app = build_app(registry.model_changed, verifier(), Leadership(False, leader_url))
    async with TestClient(TestServer(app)) as client:
        response = await client.post(WEBHOOK_PATH, data=body, headers=headers)
        assert registry.changed == []  # a standby acts on nothing itself
        return response.status, await response.json()


async def test_a_standby_passes_a_delivery_on_and_answers_with_the_leader_s_answer(
    leader: tuple[TestClient[Any, Any], Registry],
) -> None:
    client, registry = leader
    url = str(client.make_url(WEBHOOK_PATH))

    status, answer = await standby_answer(url, *delivery())

    assert (status, answer) == (200, {"refreshed": 1})
    assert registry.changed == [("bikes", True)]


async def test_a_standby_that_knows_no_leader_answers_503() -> None:
    status, answer = await standby_answer(None, *delivery())
    assert status == 503
    assert "knows no leader" in answer["error"]


async def test_a_delivery_passed_on_once_is_not_passed_on_again() -> None:
    headers, body = delivery()
    status, _ = await standby_answer(
        "http://127.0.0.1:9/unused", {**headers, FORWARDED_HEADER: "1"}, body
    )
    assert status == 503


async def test_a_standby_refuses_a_forged_delivery_without_passing_it_on() -> None:
    headers, body = delivery(secret="not-the-secret")
    status, _ = await standby_answer("http://127.0.0.1:9/unused", headers, body)
    assert status == 401
