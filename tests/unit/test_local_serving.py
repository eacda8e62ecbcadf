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


def test_mount_paths_in_args_and_env_become_the_local_directories(tmp_path: Path) -> None:
    container = {
        "command": ["uvicorn"],
        "args": ["--port", "8080", "app:app"],
        "env": [{"name": "MODEL", "value": "/model"}, {"name": "OTHER", "value": "/elsewhere"}],
        "volumeMounts": [{"name": "model", "mountPath": "/model", "readOnly": True}],
    }
    mounts = {"model": tmp_path / "model"}
    process = local.container_process(container, tmp_path / "log", mounts=mounts)
    assert process.args == ["uvicorn", "--port", "8080", "app:app"]
    assert process.env["MODEL"] == str(tmp_path / "model")
    assert process.env["OTHER"] == "/elsewhere"


@pytest.mark.timeout(10)
def test_side_by_side_processes_pick_ports_from_parts_of_the_range_that_never_meet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parts = []
    for index in range(4):
        monkeypatch.setenv(local.PORT_SLICE_ENV, f"{index}/4")
        parts.append(set(local.port_range()))
        assert local.free_port() in parts[-1]
    assert all(not (a & b) for i, a in enumerate(parts) for b in parts[i + 1 :])
    monkeypatch.delenv(local.PORT_SLICE_ENV)
    assert set(local.port_range()) == set().union(*parts)
