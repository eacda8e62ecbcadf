"""Verification of MLflow webhook deliveries (pure: no I/O).

MLflow signs each delivery: `X-MLflow-Signature: v1,<base64 HMAC-SHA256>` over
`<delivery id>.<timestamp>.<body>` with the webhook's shared secret, and sends the id and the
Unix timestamp in `X-MLflow-Delivery-Id` and `X-MLflow-Timestamp`. A delivery is accepted
only if the signature matches, the timestamp is recent and the id was not handled before.

The headers are checked before the body is read (`check_headers`), the body then
(`check_body`); the id counts as seen only once the delivery was handled (`handled`), so that
MLflow's retry of a delivery that failed (a standby's 503, a 500) is taken, not refused as a
replay.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from aliasop.models import TAG_PREFIX

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
# What MLflow sends (a UUID, Unix seconds, `v1,<base64>`), with room to spare: anything else
# is malformed, and is refused before it reaches the HMAC or the clock.
_DELIVERY_ID = re.compile(r"[!-~]{1,200}")  # printable ASCII
_TIMESTAMP = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
_SIGNATURE = re.compile(r"[!-~]{1,200}")


class Entity(StrEnum):
    """The MLflow webhook entities aliasop listens to."""

    ALIAS = "model_version_alias"  # created (set or moved), deleted
    TAG = "model_version_tag"  # set, deleted: the approval gate's news


class Rejection(StrEnum):
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    STALE = "stale"
    REPLAYED = "replayed"
    MALFORMED = "malformed"


class WebhookRejected(Exception):
    def __init__(self, reason: Rejection, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Delivery:
    """The signed headers of a delivery, well-formed, recent and not handled before."""

    delivery_id: str
    timestamp: str
    signature: str
    sent_at: float


@dataclass(frozen=True)
class RegistryChange:
    """What a delivery says changed: an alias or a version tag of `model`."""

    model: str
    entity: Entity
    action: str  # created | set | deleted


def sign(secret: str, delivery_id: str, timestamp: str, body: str) -> str:
    digest = hmac.new(
        secret.encode(), f"{delivery_id}.{timestamp}.{body}".encode(), hashlib.sha256
    ).digest()
    return "v1," + base64.b64encode(digest).decode()


class DeliveryVerifier:
    def __init__(
        self, secret: str, tolerance_seconds: float, now: Callable[[], float] = time.time
    ) -> None:
        self._secret = secret
        self._tolerance = tolerance_seconds
        self._now = now
        self._seen: OrderedDict[str, float] = OrderedDict()  # delivery id -> its timestamp

    def check_headers(self, headers: Mapping[str, str]) -> Delivery:
        """The delivery the headers announce. Raises WebhookRejected when they are missing,
        malformed, stale, or name a delivery already handled."""
        delivery_id = headers.get(DELIVERY_ID_HEADER, "")
        stamp = headers.get(TIMESTAMP_HEADER, "")
        signature = headers.get(SIGNATURE_HEADER, "")
        if not (delivery_id and stamp and signature):
            raise WebhookRejected(Rejection.UNSIGNED, "signature headers missing")
        well_formed = (
            _DELIVERY_ID.fullmatch(delivery_id)
            and _TIMESTAMP.fullmatch(stamp)
            and _SIGNATURE.fullmatch(signature)
        )
        if not well_formed:
            raise WebhookRejected(Rejection.MALFORMED, "signature headers malformed")
        sent_at, now = float(stamp), self._now()
        if abs(now - sent_at) > self._tolerance:
            raise WebhookRejected(Rejection.STALE, f"timestamp {stamp} is too far from now")
        self._forget_before(now - self._tolerance)
        if delivery_id in self._seen:
            raise WebhookRejected(Rejection.REPLAYED, f"delivery {delivery_id} handled before")
        return Delivery(delivery_id, stamp, signature, sent_at)

    def check_body(self, delivery: Delivery, body: bytes) -> RegistryChange | None:
        """The change a delivery reports; None for events aliasop does not listen to.
        Raises WebhookRejected unless its signature matches."""
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise WebhookRejected(Rejection.MALFORMED, "undecodable body") from None
        expected = sign(self._secret, delivery.delivery_id, delivery.timestamp, text)
        if not hmac.compare_digest(expected, delivery.signature):
            raise WebhookRejected(Rejection.BAD_SIGNATURE, "signature does not match")
        return _registry_change(text)

    def handled(self, delivery: Delivery) -> None:
        """The delivery was acted on: it is refused from now on."""
        self._seen[delivery.delivery_id] = delivery.sent_at

    @property
    def remembered(self) -> int:
        """How many delivery ids are held to refuse replays: as of the last delivery, those
        still within the tolerance, so memory follows the delivery rate, not the uptime."""
        return len(self._seen)

    def _forget_before(self, cutoff: float) -> None:
        # Ids older than the tolerance cannot come back: their timestamp would be stale.
        while self._seen and next(iter(self._seen.values())) < cutoff:
            self._seen.popitem(last=False)


def _registry_change(text: str) -> RegistryChange | None:
    try:
        payload = json.loads(text)
        if payload.get("entity") not in tuple(Entity):
            return None
        if str(payload["data"].get("key", "")).startswith(TAG_PREFIX):
            return None  # aliasop's own record (ALIASOP_REGISTRY_WRITE_BACK): nothing to do
        return RegistryChange(
            model=str(payload["data"]["name"]),
            entity=Entity(payload["entity"]),
            action=str(payload["action"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise WebhookRejected(Rejection.MALFORMED, "not an MLflow webhook payload") from None
