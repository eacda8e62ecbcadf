"""Registry write grants, and the alias revert's compare-before-write: pure decisions.

One operator serves many namespaces with one MLflow writer identity. Which namespace may have
it write to which registered model is the operator's setting (ALIASOP_REGISTRY_WRITE_GRANTS),
not the spec's: otherwise a tenant could tag, or move the alias of, any team's model by naming
it. A namespace without a grant for its model writes nothing to the registry, and its status
says so (the RegistryWritesGranted condition, an Event when that turns).

A revert (onFailure: RevertAlias) moves the alias back only while it still points at the
version that failed, as read right before writing: a person who moved it meanwhile keeps their
move. MLflow has no conditional alias write, so the read and the write are two requests; the
window between them is one round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from fnmatch import fnmatchcase

from aliasop.events import Event, EventType
from aliasop.models import (
    Condition,
    ConditionType,
    ModelDeploymentStatus,
    ModelUri,
    Outcome,
    Reason,
)

GRANTS_SETTING = "ALIASOP_REGISTRY_WRITE_GRANTS"

# Namespace (name or glob pattern) -> registered models it may write (names or glob patterns).
WriteGrants = Mapping[str, Sequence[str]]


def may_write(grants: WriteGrants, namespace: str, model: str) -> bool:
    """Whether ModelDeployments in `namespace` may have the operator write to `model`: some
    entry's namespace pattern matches it and one of that entry's model patterns matches the
    model. Patterns are shell globs (`*`, `?`, `[...]`), case-sensitive as both names are."""
    return any(
        fnmatchcase(namespace, pattern) and any(fnmatchcase(model, m) for m in models)
        for pattern, models in grants.items()
    )


def scope_reported(
    previous: ModelDeploymentStatus,
    status: ModelDeploymentStatus,
    granted: bool,
    namespace: str,
    model: str,
    now: datetime,
) -> tuple[ModelDeploymentStatus, list[Event]]:
    """`status` with the RegistryWritesGranted condition set, and the Event its turn earns
    (none while it stays as `previous` had it)."""
    if granted:
        reason, message = Reason.WRITES_GRANTED, f"{namespace} may write to model {model!r}"
    else:
        reason = Reason.WRITES_NOT_GRANTED
        message = (
            f"namespace {namespace} has no grant to write to registered model {model!r} "
            f"({GRANTS_SETTING}): aliasop writes nothing to the registry for this resource, "
            "neither tags nor an alias revert"
        )
    value = "True" if granted else "False"
    before = previous.condition(ConditionType.REGISTRY_WRITES_GRANTED)
    turned = before is None or before.status != value
    since = now.replace(microsecond=0) if before is None or turned else before.last_transition_time
    condition = Condition(
        type=ConditionType.REGISTRY_WRITES_GRANTED,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=status.observed_generation,
    )
    others = [c for c in status.conditions if c.type != condition.type]
    updated = status.model_copy(update={"conditions": [*others, condition]})
    events: list[Event] = []
    if not granted and turned:
        events.append(Event(EventType.WARNING, reason, message))
    elif granted and before is not None and not before.is_true:
        events.append(Event(EventType.NORMAL, reason, message))
    return updated, events


def scope_forgotten(status: ModelDeploymentStatus) -> ModelDeploymentStatus:
    """`status` without the RegistryWritesGranted condition (write-back is off)."""
    kept = [c for c in status.conditions if c.type != ConditionType.REGISTRY_WRITES_GRANTED]
    if len(kept) == len(status.conditions):
        return status
    return status.model_copy(update={"conditions": kept})


class RevertOutcome(StrEnum):
    REVERTED = "Reverted"  # the alias still pointed at the failed version: moved back
    ALREADY_THERE = "AlreadyThere"  # it already points at the version to go back to
    MOVED_MEANWHILE = "MovedMeanwhile"  # someone moved it elsewhere since: left alone
    GONE = "Gone"  # the alias no longer exists: not created again
    NOT_GRANTED = "NotGranted"  # this namespace may not write to the model
    NO_WRITE_BACK = "NoWriteBack"  # the operator does not write to the registry at all
    REGISTRY_FAILED = "RegistryFailed"  # the read or the write failed


def revert_outcome(alias_now: str | None, failed: str | None, back_to: str) -> RevertOutcome:
    """What a revert does, given where the alias points right before the write: it moves the
    alias back to `back_to` only while it still points at the `failed` version."""
    if alias_now is None:
        return RevertOutcome.GONE
    if alias_now == back_to:
        return RevertOutcome.ALREADY_THERE
    if failed is None or alias_now != failed:
        return RevertOutcome.MOVED_MEANWHILE
    return RevertOutcome.REVERTED


@dataclass(frozen=True)
class RevertResult:
    outcome: RevertOutcome
    alias_now: str | None = None  # where the alias pointed when read
    problem: str = ""  # the registry's failure, for REGISTRY_FAILED


def revert_recorded(
    status: ModelDeploymentStatus,
    uri: ModelUri,
    back_to: str,
    result: RevertResult,
) -> tuple[ModelDeploymentStatus, Event]:
    """The record of a revert: `status` with its message and the failed version's history
    entry saying what became of the alias, and the Event that says it."""
    failed = status.failed_version
    if result.outcome is RevertOutcome.REVERTED:
        done = f"{uri} moved back from version {failed} to version {back_to}"
        return status, Event(EventType.NORMAL, Reason.ALIAS_REVERTED, done)
    if result.outcome is RevertOutcome.ALREADY_THERE:
        done = f"{uri} already points at version {back_to}: nothing to move back"
        return status, Event(EventType.NORMAL, Reason.ALIAS_REVERTED, done)
    why = _not_reverted_because(result, failed)
    outcome = f"{uri} not moved back: {why}"
    message = status.message
    if outcome not in message:
        message = f"{message}; {outcome}" if message else outcome
    history = [
        entry.model_copy(update={"message": f"{entry.message}; {outcome}"})
        if entry.version == failed
        and entry.outcome is Outcome.FAILED
        and outcome not in entry.message
        else entry
        for entry in status.history
    ]
    updated = status.model_copy(update={"message": message, "history": history})
    return updated, Event(EventType.WARNING, Reason.ALIAS_NOT_REVERTED, outcome)


def _not_reverted_because(result: RevertResult, failed: str | None) -> str:
    match result.outcome:
        case RevertOutcome.MOVED_MEANWHILE:
            return (
                f"it points at version {result.alias_now} now, not at the failed version "
                f"{failed}: someone moved it since, and their move stands"
            )
        case RevertOutcome.GONE:
            return "the alias no longer exists, and is not created again"
        case RevertOutcome.NOT_GRANTED:
            return f"this namespace has no grant to write to the model ({GRANTS_SETTING})"
        case RevertOutcome.NO_WRITE_BACK:
            return "onFailure: RevertAlias needs the operator's ALIASOP_REGISTRY_WRITE_BACK"
        case _:
            return f"the registry failed: {result.problem}"
