"""Notifications of a rollout's course (pure: no I/O; aliasop.notifier sends them).

Operator-level receivers (chart values `notifications.receivers`, kept in a Secret) get one
signed JSON message per Event worth telling a team: docs/notifications.md shows its shape. The
signature is MLflow's own scheme (aliasop.webhooks.sign): `X-Aliasop-Signature: v1,<base64
HMAC-SHA256>` over `<delivery id>.<timestamp>.<body>` with the receiver's signing key.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, Field, SecretStr

from aliasop.modelbase import rfc3339
from aliasop.webhooks import sign

SIGNATURE_HEADER = "X-Aliasop-Signature"
TIMESTAMP_HEADER = "X-Aliasop-Timestamp"
DELIVERY_ID_HEADER = "X-Aliasop-Delivery-Id"


class Notice(StrEnum):
    """What a message tells: its `type`."""

    STARTED = "rollout.started"
    SUCCEEDED = "rollout.succeeded"
    FAILED = "rollout.failed"
    ABORTED = "rollout.aborted"
    HELD = "rollout.held"  # a release gate holds the version back
    CANARY_STEP = "canary.step"


# Event reason -> notice. Reasons by value, so that a reason the state machine adds under one
# of these names is told without a change here.
NOTICES: dict[str, Notice] = {
    "RolloutStarted": Notice.STARTED,
    "RolloutSucceeded": Notice.SUCCEEDED,
    "RolloutFailed": Notice.FAILED,
    "RolloutAborted": Notice.ABORTED,
    "CanaryAborted": Notice.ABORTED,
    "WaitingForApproval": Notice.HELD,
    "SignatureIncompatible": Notice.HELD,
    "CanaryStep": Notice.CANARY_STEP,
    "CanaryPromoted": Notice.CANARY_STEP,
}


class BodyFormat(StrEnum):
    JSON = "json"  # the message as documented
    SLACK = "slack"  # {"text": ...}: a Slack (or Mattermost, Teams workflow) incoming webhook


class Receiver(BaseModel):
    """One receiver, as the chart's Secret lists them."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$", max_length=2048)]
    signing_key: SecretStr = Field(SecretStr(""), alias="signingKey")
    format: BodyFormat = BodyFormat.JSON
    # Notice types it gets; empty: all.
    events: list[Notice] = Field(default_factory=list)

    def wants(self, notice: Notice) -> bool:
        return not self.events or notice in self.events


class Receivers(BaseModel):
    receivers: list[Receiver] = Field(default_factory=list, max_length=20)


def message(
    notice: Notice,
    involved: dict[str, Any],
    reason: str,
    text: str,
    at: datetime,
    delivery_id: str,
    operator_version: str,
) -> dict[str, Any]:
    """The JSON message of one notice about `involved` (the ModelDeployment)."""
    meta = involved.get("metadata") or {}
    spec = involved.get("spec") or {}
    return {
        "id": delivery_id,
        "type": notice.value,
        "time": rfc3339(at),
        "resource": {
            "namespace": meta.get("namespace"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "model": spec.get("model"),
        },
        "reason": reason,
        "message": text,
        "source": f"aliasop/{operator_version}",
    }


def body(receiver: Receiver, payload: dict[str, Any]) -> str:
    """What is posted to `receiver`: the message, or a Slack-compatible text."""
    if receiver.format is BodyFormat.SLACK:
        where = f"{payload['resource']['namespace']}/{payload['resource']['name']}"
        return json.dumps({"text": f"[{where}] {payload['type']}: {payload['message']}"})
    return json.dumps(payload, separators=(",", ":"))


def signed_headers(
    receiver: Receiver, delivery_id: str, timestamp: int, text: str
) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        DELIVERY_ID_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(timestamp),
    }
    key = receiver.signing_key.get_secret_value()
    if key:
        headers[SIGNATURE_HEADER] = sign(key, delivery_id, str(timestamp), text)
    return headers
