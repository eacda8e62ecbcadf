"""The Events a decision earns: posted about the ModelDeployment, and logged."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from aliasop.models import Reason


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: Reason
    message: str
