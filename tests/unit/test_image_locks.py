"""The images' lock files (requirements/*.txt, `make lock`) are in step with pyproject.toml:
each requirement it lists is pinned there, at a version it allows, with hashes."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
LOCKS = {
    "build": PYPROJECT["build-system"]["requires"],
    "operator": PYPROJECT["project"]["dependencies"],
    # The serving image carries every artifact store's extra (see pyproject.toml).
    "serving": [
        requirement
        for extra in ("serving", "serving-s3", "serving-gcs", "serving-azure")
        for requirement in PYPROJECT["project"]["optional-dependencies"][extra]
    ],
}
PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+) \\$")


def pins(lock: str) -> dict[str, str]:
    """name -> version of every package pinned in requirements/<lock>.txt, each checked to
    carry at least one hash."""
    lines = (REPO / "requirements" / f"{lock}.txt").read_text().splitlines()
    pinned: dict[str, str] = {}
    for number, line in enumerate(lines):
        match = PIN.match(line)
        if match:
            assert lines[number + 1].strip().startswith("--hash=sha256:"), line
            pinned[canonicalize_name(match[1])] = match[2]
    return pinned


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_pins_what_pyproject_requires(lock: str) -> None:
    pinned = pins(lock)
    assert pinned, f"requirements/{lock}.txt pins nothing"
    for text in LOCKS[lock]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} missing from requirements/{lock}.txt: run make lock"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"requirements/{lock}.txt pins {name}=={pinned[name]}, outside {text!r}: run make lock"
        )


def test_serving_lock_holds_none_of_the_operators_own_packages() -> None:
    # What the operator needs and MLflow does not: the serving image must not carry them.
    operator_only = {"kopf", "pydantic-settings", "prometheus-client", "httpx"}
    assert operator_only <= set(pins("operator"))
    assert not operator_only & set(pins("serving"))
