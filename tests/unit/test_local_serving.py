"""The local stand-in for a serving pod gives the process the environment the kubelet would."""

from __future__ import annotations

from pathlib import Path

import pytest

from aliasop_dev import local


def test_env_from_secrets_then_the_containers_own_env(tmp_path: Path) -> None:
    container = {
        "command": ["mlflow"],
        "args": ["models", "serve"],
        "env": [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"}],
        "envFrom": [
            {"secretRef": {"name": "store"}},
            {"secretRef": {"name": "extra"}, "prefix": "X_"},
            {"secretRef": {"name": "absent", "optional": True}},
        ],
    }
    secrets = {
        "store": {"AWS_ACCESS_KEY_ID": "id", "MLFLOW_TRACKING_URI": "http://other"},
        "extra": {"TOKEN": "t"},
    }
    process = local.container_process(container, tmp_path / "log", secrets=secrets, cwd=tmp_path)
    assert process.args == ["mlflow", "models", "serve"]
    assert process.cwd == tmp_path
    # The container's env wins over what envFrom gives, as in Kubernetes.
    assert process.env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert process.env["AWS_ACCESS_KEY_ID"] == "id"
    assert process.env["X_TOKEN"] == "t"
    assert "TOKEN" not in process.env


def test_a_required_secret_that_is_missing_fails(tmp_path: Path) -> None:
    container = {"command": ["mlflow"], "envFrom": [{"secretRef": {"name": "store"}}]}
    with pytest.raises(KeyError, match="store"):
        local.container_process(container, tmp_path / "log", secrets={})
