"""The signature gate's rules: what a candidate's inputs break for clients of the serving
version, by the conversions MLflow's schema enforcement makes (_enforce_mlflow_datatype)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aliasop.signatures import (
    Column,
    Comparison,
    Inputs,
    Unreadable,
    breaking_changes,
    compare,
    parse_inputs,
)

pytestmark = pytest.mark.timeout(10)

# What MLflow wrote for the demo's bikes model (MLmodel `signature.inputs`), trimmed.
BIKES = (
    '[{"type": "long", "name": "hour", "required": true}, '
    '{"type": "double", "name": "temperature", "required": true}, '
    '{"type": "double", "name": "wind", "required": true}]'
)


def columns(*specs: dict[str, Any]) -> tuple[Column, ...]:
    parsed = parse_inputs(json.dumps(list(specs))).columns
    assert parsed is not None
    return parsed


def col(name: str, type_: str, required: bool = True) -> dict[str, Any]:
    return {"type": type_, "name": name, "required": required}


def test_parses_mlflow_column_signatures_required_by_default() -> None:
    assert parse_inputs(BIKES) == Inputs(
        (Column("hour", "long"), Column("temperature", "double"), Column("wind", "double"))
    )
    parsed = parse_inputs(
        '[{"type": "long", "name": "hour"}, {"type": "double", "name": "t", "required": false}]'
    )
    assert parsed.columns == (Column("hour", "long", True), Column("t", "double", False))


def test_unnamed_columns_go_by_position_and_are_all_needed() -> None:
    # MLflow checks positional inputs by count only, whatever `required` says.
    parsed = parse_inputs('[{"type": "double", "required": false}, {"type": "long"}]')
    assert parsed.columns == (Column("#0", "double"), Column("#1", "long"))


def test_nested_types_are_spelled_comparably() -> None:
    parsed = columns(
        {"type": "array", "items": {"type": "long"}, "name": "a"},
        {"type": "map", "values": {"type": "double"}, "name": "m"},
        {
            "type": "object",
            "name": "o",
            "properties": {"z": {"type": "string", "required": False}, "b": {"type": "long"}},
        },
    )
    assert [c.type for c in parsed] == [
        "array<long>",
        "map<string, double>",
        "object{b: long, z?: string}",
    ]


def test_tensor_and_unreadable_inputs_have_no_columns_and_say_why() -> None:
    tensor = parse_inputs(
        '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}]'
    )
    assert tensor.columns is None and "tensor-based" in tensor.why_not
    assert parse_inputs(None) == Inputs(None, "has no signature (MLflow enforces no schema for it)")
    for text, why in [
        ("not json", "Expecting value"),
        ('{"type": "long"}', "not a list"),
        ('[{"name": "hour"}]', "no 'type' key"),
        ('["long"]', "has no attribute"),
    ]:
        parsed = parse_inputs(text)
        assert parsed.columns is None and why in parsed.why_not, (text, parsed)


def test_a_required_input_gone_breaks_an_optional_one_does_not() -> None:
    serving = columns(col("hour", "long"), col("wind", "double"), col("gust", "double", False))
    assert breaking_changes(serving, columns(col("hour", "long"))) == [
        "column 'wind' (double) is gone"
    ]


def test_a_new_required_input_breaks_a_new_optional_one_does_not() -> None:
    serving = columns(col("hour", "long"), col("gust", "double", False))
    candidate = columns(
        col("hour", "long"),
        col("gust", "double"),  # was optional: clients may leave it out
        col("wind", "double"),  # new and required
        col("rain", "double", False),  # new and optional: fine
    )
    assert breaking_changes(serving, candidate) == [
        "column 'gust' (double) becomes required: clients may leave it out",
        "column 'wind' (double) is new and required: clients do not send it yet",
    ]
    relaxed = columns(col("hour", "long", False), col("gust", "double", False))
    assert breaking_changes(serving, relaxed) == []  # required -> optional is fine


@pytest.mark.parametrize(
    ("serving", "candidate"),
    [
        ("integer", "long"),
        ("float", "double"),
        ("integer", "double"),
        ("string", "string"),
        ("long", "any"),  # MLflow's AnyType checks nothing
        ("datetime", "any"),
    ],
)
def test_lossless_widenings_are_compatible(serving: str, candidate: str) -> None:
    assert breaking_changes(columns(col("x", serving)), columns(col("x", candidate))) == []


@pytest.mark.parametrize(
    ("serving", "candidate"),
    [
        ("double", "long"),
        ("long", "integer"),
        ("long", "double"),  # int64 -> float64 may lose precision: MLflow refuses it
        ("double", "float"),
        ("string", "long"),
        ("float", "long"),
        ("boolean", "long"),
        ("string", "binary"),
        ("datetime", "string"),
        ("any", "long"),
    ],
)
def test_other_type_changes_break(serving: str, candidate: str) -> None:
    problems = breaking_changes(columns(col("x", serving)), columns(col("x", candidate)))
    assert problems == [
        f"column 'x' changes type from {serving} to {candidate} "
        f"(MLflow does not convert {serving} to {candidate})"
    ]


def test_a_type_change_of_an_optional_input_still_breaks() -> None:
    serving = columns(col("t", "double", False))
    assert breaking_changes(serving, columns(col("t", "long", False))) != []


def test_nested_types_must_match_exactly() -> None:
    longs = columns({"type": "array", "items": {"type": "long"}, "name": "a"})
    doubles = columns({"type": "array", "items": {"type": "double"}, "name": "a"})
    assert breaking_changes(longs, longs) == []
    assert breaking_changes(longs, doubles) == [
        "column 'a' changes type from array<long> to array<double> "
        "(MLflow does not convert array<long> to array<double>)"
    ]


def test_compare_names_every_problem() -> None:
    candidate = '[{"type": "double", "name": "hour"}, {"type": "double", "name": "temperature"}]'
    verdict = compare(
        serving_version="3", serving_inputs=BIKES, candidate_version="4", candidate_inputs=candidate
    )
    assert verdict == Comparison(
        False,
        (
            "column 'hour' changes type from long to double "
            "(MLflow does not convert long to double)",
            "column 'wind' (double) is gone",
        ),
    )
    same = compare(
        serving_version="3", serving_inputs=BIKES, candidate_version="4", candidate_inputs=BIKES
    )
    assert same == Comparison(True)


def test_no_column_signature_on_either_side_is_compatible_and_says_which() -> None:
    def note(serving: str | Unreadable | None, candidate: str | Unreadable | None) -> str:
        verdict = compare(
            serving_version="3",
            serving_inputs=serving,
            candidate_version="4",
            candidate_inputs=candidate,
        )
        assert verdict.compatible and verdict.problems == ()
        return verdict.note

    assert note(BIKES, None) == (
        "signatures not compared: version 4 has no signature (MLflow enforces no schema for it)"
    )
    assert note(None, BIKES).startswith("signatures not compared: version 3 has no signature")
    tensor = '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1]}}]'
    assert "version 4 has a tensor-based signature" in note(BIKES, tensor)
    both = note(None, Unreadable("keeps its files in s3: storage"))
    assert "version 3 has no signature" in both
    assert "; version 4 keeps its files in s3: storage" in both
    assert "cannot be read" in note(BIKES, "[oops")
