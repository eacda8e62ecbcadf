"""What every typed part of the resource shares: camelCase fields, and times as Kubernetes
writes them. Plain data (aliasop.models and aliasop.analysis_models build on it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, PlainSerializer
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


def rfc3339(at: datetime) -> str:
    """The one way aliasop writes a time: RFC 3339 in UTC to the second, as Kubernetes does."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# A time in status: a datetime in Python, RFC 3339 in JSON.
Timestamp = Annotated[datetime, PlainSerializer(rfc3339, return_type=str, when_used="json")]
