"""spec.trackingUri is a plain http(s) URL: no credentials, query or fragment. The CRD's
pattern refuses the others at apply time, and the operator's model agrees."""

import re

import pytest
from pydantic import ValidationError

from aliasop.crd import build_crd
from aliasop.models import TRACKING_URI_MESSAGE, ModelDeploymentSpec

ACCEPTED = [
    "",
    "http://mlflow.mlflow:5000",
    "https://mlflow.example.com",
    "https://ingress.example.com/mlflow",
    "https://ingress.example.com/mlflow/",
    "http://10.0.0.7:5000/a/b",
    "http://[fd00::7]:5000",
]
REFUSED = [
    "http://user:pass@mlflow:5000",
    "http://token@mlflow:5000",
    "http://mlflow:5000/?token=x",
    "http://mlflow:5000/path?x=1",
    "http://mlflow:5000/#top",
    "http://mlflow:abc",
    "http://mlflow:",
    "http://",
    "http:///path",
    "ftp://mlflow",
    "file:///etc/passwd",
    "http://mlflow:5000/a b",
    "http://-mlflow",
]


def crd_pattern() -> str:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    pattern: str = spec["properties"]["trackingUri"]["pattern"]
    return pattern


@pytest.mark.parametrize("uri", ACCEPTED)
def test_plain_urls_are_accepted_by_schema_and_operator(uri: str) -> None:
    assert re.fullmatch(crd_pattern(), uri)
    assert ModelDeploymentSpec.model_validate({"model": "models:/m@a", "trackingUri": uri})


@pytest.mark.parametrize("uri", REFUSED)
def test_others_are_refused_by_both_with_a_clear_message(uri: str) -> None:
    assert re.fullmatch(crd_pattern(), uri) is None
    with pytest.raises(ValidationError) as raised:
        ModelDeploymentSpec.model_validate({"model": "models:/m@a", "trackingUri": uri})
    assert TRACKING_URI_MESSAGE in str(raised.value)
    assert "without user or password" in TRACKING_URI_MESSAGE
