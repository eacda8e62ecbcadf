from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from aliasop.models import ALIAS_PATTERN, MODEL_NAME_PATTERN, ModelDeploymentSpec, ModelUri


def test_parse_model_uri() -> None:
    uri = ModelUri.parse("models:/cat.schema.bikes@champion")
    assert (uri.name, uri.alias) == ("cat.schema.bikes", "champion")
    assert uri.pinned("4") == "models:/cat.schema.bikes/4"
    assert str(uri) == "models:/cat.schema.bikes@champion"


@pytest.mark.parametrize(
    "bad",
    [
        "bikes@champion",
        "models:/bikes",
        "models:/bikes/3",
        "models:/@champion",
        "models:/bikes@",
        "models:/bi kes@champion",
        "models:/bikes@champ@ion",
        "models:/bikes@champion\n",
        "runs:/abc/model",
    ],
)
def test_invalid_model_uris_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="models:/<name>@<alias>"):
        ModelUri.parse(bad)
    with pytest.raises(ValidationError):
        ModelDeploymentSpec(model=bad)


@given(
    st.from_regex(MODEL_NAME_PATTERN, fullmatch=True), st.from_regex(ALIAS_PATTERN, fullmatch=True)
)
def test_model_uri_round_trips(name: str, alias: str) -> None:
    uri = ModelUri.parse(f"models:/{name}@{alias}")
    assert (uri.name, uri.alias) == (name, alias)
    assert ModelUri.parse(str(uri)) == uri


@given(st.text(max_size=80))
def test_model_uri_parsing_never_crashes_and_agrees_with_the_spec(text: str) -> None:
    try:
        uri = ModelUri.parse(text)
    except ValueError:
        with pytest.raises(ValidationError):
            ModelDeploymentSpec(model=text)
    else:
        assert ModelDeploymentSpec(model=text).model_uri == uri


def test_spec_defaults_and_bounds() -> None:
    spec = ModelDeploymentSpec.model_validate({"model": "models:/bikes@champion"})
    assert spec.replicas is None
    assert spec.poll_interval_seconds == 30
    assert spec.rollout.auto_rollback
    for field, value in [("pollIntervalSeconds", 4), ("replicas", -1), ("historyLimit", 0)]:
        with pytest.raises(ValidationError):
            ModelDeploymentSpec.model_validate({"model": "models:/bikes@champion", field: value})


@pytest.mark.parametrize(
    "budget",
    [{}, {"minAvailable": 1, "maxUnavailable": 1}, {"minAvailable": "half"}],
    ids=["neither", "both", "not a count or percentage"],
)
def test_a_disruption_budget_takes_exactly_one_count_or_percentage(budget: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ModelDeploymentSpec.model_validate(
            {"model": "models:/bikes@champion", "serving": {"disruptionBudget": budget}}
        )
