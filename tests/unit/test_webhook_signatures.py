import json

import pytest

from aliasop.webhooks import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryVerifier,
    Entity,
    RegistryChange,
    Rejection,
    WebhookRejected,
    sign,
)

SECRET = "shared-secret"
NOW = 1_800_000_000.0


def delivery(
    delivery_id: str = "d-1",
    sent_at: float = NOW,
    secret: str = SECRET,
    entity: str = "model_version_alias",
) -> tuple[dict[str, str], bytes]:
    body = json.dumps(
        {
            "entity": entity,
            "action": "created",
            "timestamp": "t",
            "data": {"name": "bikes", "alias": "champion", "version": "2"},
        }
    )
    stamp = str(int(sent_at))
    headers = {
        DELIVERY_ID_HEADER: delivery_id,
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign(secret, delivery_id, stamp, body),
    }
    return headers, body.encode()


def verifier() -> DeliveryVerifier:
    return DeliveryVerifier(SECRET, tolerance_seconds=300, now=lambda: NOW)


def accept(check: DeliveryVerifier, headers: dict[str, str], body: bytes) -> RegistryChange | None:
    """Check a delivery as the endpoint does, and mark it handled."""
    checked = check.check_headers(headers)
    change = check.check_body(checked, body)
    check.handled(checked)
    return change


def rejection(check: DeliveryVerifier, headers: dict[str, str], body: bytes) -> Rejection:
    with pytest.raises(WebhookRejected) as raised:
        accept(check, headers, body)
    return raised.value.reason


def test_a_signed_recent_delivery_is_accepted() -> None:
    assert accept(verifier(), *delivery()) == RegistryChange("bikes", Entity.ALIAS, "created")
    tag = accept(verifier(), *delivery(entity="model_version_tag"))
    assert tag == RegistryChange("bikes", Entity.TAG, "created")


def test_other_events_are_ignored() -> None:
    assert accept(verifier(), *delivery(entity="model_version")) is None


def test_the_operators_own_tags_are_ignored() -> None:
    """ALIASOP_REGISTRY_WRITE_BACK's tag writes come back as deliveries: no loop."""
    own = json.dumps(
        {
            "entity": "model_version_tag",
            "action": "set",
            "timestamp": "t",
            "data": {"name": "bikes", "version": "2", "key": "aliasop/ml/bikes", "value": "x"},
        }
    )
    headers = {
        DELIVERY_ID_HEADER: "own-1",
        TIMESTAMP_HEADER: str(int(NOW)),
        SIGNATURE_HEADER: sign(SECRET, "own-1", str(int(NOW)), own),
    }
    assert accept(verifier(), headers, own.encode()) is None


def test_forged_stale_replayed_and_unsigned_deliveries_are_refused() -> None:
    check = verifier()
    assert rejection(check, *delivery(secret="guess")) is Rejection.BAD_SIGNATURE
    assert rejection(check, *delivery(sent_at=NOW - 301)) is Rejection.STALE
    assert rejection(check, *delivery(sent_at=NOW + 301)) is Rejection.STALE
    headers, body = delivery()
    accept(check, headers, body)
    assert rejection(check, headers, body) is Rejection.REPLAYED
    tampered = body.replace(b"champion", b"challenger")
    assert rejection(check, *delivery("d-2")[:1], tampered) is Rejection.BAD_SIGNATURE
    assert rejection(check, {}, body) is Rejection.UNSIGNED


def test_seen_ids_are_forgotten_once_they_would_be_stale() -> None:
    clock = [NOW]
    check = DeliveryVerifier(SECRET, tolerance_seconds=300, now=lambda: clock[0])
    first = delivery("d-0")
    for i in range(1000):
        accept(check, *delivery(f"d-{i}"))
    assert check.remembered == 1000
    clock[0] = NOW + 301
    fresh = delivery("fresh", sent_at=clock[0])
    accept(check, *fresh)
    assert check.remembered == 1  # bounded by the tolerance, whatever came before
    # A forgotten id cannot come back: the timestamp its signature covers is stale by now.
    assert rejection(check, *first) is Rejection.STALE
    assert rejection(check, *fresh) is Rejection.REPLAYED  # a remembered one is still refused
