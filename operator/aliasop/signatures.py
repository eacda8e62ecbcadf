"""The signature gate: would the requests clients send the serving version still be accepted?

MLflow keeps a model's input signature in its MLmodel file (`signature.inputs`, a JSON string)
and checks every request against it (mlflow.models.utils._enforce_schema). Clients keep
sending what the serving version accepts, so a candidate is compared with the serving version
column by column, by the conversions MLflow's enforcement allows. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Serving type -> candidate type conversions MLflow makes without loss
# (_enforce_mlflow_datatype: int32 -> int64, float32 -> float64, int32 -> float64).
# Any other change of type is refused on some request the serving version accepted.
_WIDENINGS = frozenset({("integer", "long"), ("float", "double"), ("integer", "double")})
_ANY = "any"  # MLflow's AnyType: no check at all


@dataclass(frozen=True)
class Column:
    """One input column. Unnamed (positional) columns are named by position: `#0`, `#1`."""

    name: str
    type: str  # an MLflow DataType name (long, double, ...) or e.g. array<long>
    required: bool = True

    def __str__(self) -> str:
        return f"column {self.name!r} ({self.type})"


@dataclass(frozen=True)
class Inputs:
    """A version's signature inputs: its columns, or (columns None) why there are none to
    compare, as a phrase following "version 4", e.g. "has no signature"."""

    columns: tuple[Column, ...] | None
    why_not: str = ""


@dataclass(frozen=True)
class Unreadable:
    """The registry could not show a version's MLmodel (e.g. its files are in storage the
    MLflow server does not proxy): why, as a phrase following "version 4"."""

    why: str


# What the registry gives for a version: its `signature.inputs` JSON, None (no signature), or
# Unreadable.
SignatureInputs = str | Unreadable | None


@dataclass(frozen=True)
class Comparison:
    """The gate's verdict. `note` says why nothing was compared (empty when it was): then the
    candidate is compatible, as MLflow enforces no column schema there either."""

    compatible: bool
    problems: tuple[str, ...] = ()
    note: str = ""


def parse_inputs(text: str | None) -> Inputs:
    """Columns from MLmodel's `signature.inputs` (None: the version has no signature)."""
    if text is None:
        return Inputs(None, "has no signature (MLflow enforces no schema for it)")
    try:
        entries = json.loads(text)
        if not isinstance(entries, list):
            raise ValueError("not a list of inputs")
        if any(isinstance(e, dict) and e.get("type") == "tensor" for e in entries):
            return Inputs(None, "has a tensor-based signature (only columns are compared)")
        named = bool(entries) and entries[0].get("name") is not None
        columns = tuple(_column(entry, i, named) for i, entry in enumerate(entries))
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        why = f"an entry has no {exc} key" if isinstance(exc, KeyError) else str(exc)
        return Inputs(None, f"has signature inputs that cannot be read ({why})")
    return Inputs(columns)


def breaking_changes(serving: Sequence[Column], candidate: Sequence[Column]) -> list[str]:
    """How the candidate would refuse requests the serving version accepts, column by column
    (empty: compatible). A new optional column or a lossless widening breaks nothing."""
    before = {column.name: column for column in serving}
    after = {column.name: column for column in candidate}
    problems: list[str] = []
    for old in serving:
        new = after.get(old.name)
        if new is None:
            if old.required:
                problems.append(f"{old} is gone")
        elif not _accepts(old.type, new.type):
            problems.append(
                f"column {old.name!r} changes type from {old.type} to {new.type} "
                f"(MLflow does not convert {old.type} to {new.type})"
            )
    for added in candidate:
        had = before.get(added.name)
        if added.required and had is None:
            problems.append(f"{added} is new and required: clients do not send it yet")
        elif added.required and had is not None and not had.required:
            problems.append(f"{added} becomes required: clients may leave it out")
    return problems


def compare(
    *,
    serving_version: str,
    serving_inputs: SignatureInputs,
    candidate_version: str,
    candidate_inputs: SignatureInputs,
) -> Comparison:
    """Compare two versions' `signature.inputs` (as the registry gave them). When either side
    has no column-based signature, MLflow itself checks nothing there to compare with: the
    candidate is compatible and the note says which side lacks one."""
    serving = _inputs(serving_inputs)
    candidate = _inputs(candidate_inputs)
    if serving.columns is None or candidate.columns is None:
        lacking = [
            f"version {version} {inputs.why_not}"
            for version, inputs in ((serving_version, serving), (candidate_version, candidate))
            if inputs.columns is None
        ]
        return Comparison(True, note="signatures not compared: " + "; ".join(lacking))
    problems = tuple(breaking_changes(serving.columns, candidate.columns))
    return Comparison(not problems, problems)


def _inputs(given: SignatureInputs) -> Inputs:
    return Inputs(None, given.why) if isinstance(given, Unreadable) else parse_inputs(given)


def _accepts(serving: str, candidate: str) -> bool:
    """Whether what clients send for a `serving` column passes the candidate's check."""
    return serving == candidate or candidate == _ANY or (serving, candidate) in _WIDENINGS


def _column(entry: dict[str, Any], position: int, named: bool) -> Column:
    name = entry.get("name") if named else None
    return Column(
        name=str(name) if name is not None else f"#{position}",
        type=_spell(entry),
        # MLflow always writes `required`; absent, it is taken as true. Positional columns
        # are counted, not looked up by name: each one is needed.
        required=bool(entry.get("required", True)) or not named,
    )


def _spell(spec: dict[str, Any] | str) -> str:
    """A type as one comparable string: long, array<long>, map<string, double>,
    object{a: long, b?: string} (? marks an optional property)."""
    if isinstance(spec, str):
        return spec
    kind = str(spec["type"])
    if kind == "array":
        return f"array<{_spell(spec['items'])}>"
    if kind == "map":
        return f"map<string, {_spell(spec['values'])}>"
    if kind == "object":
        properties = sorted(spec["properties"].items())
        return (
            "object{"
            + ", ".join(
                f"{name}{'' if prop.get('required', True) else '?'}: {_spell(prop)}"
                for name, prop in properties
            )
            + "}"
        )
    return kind
