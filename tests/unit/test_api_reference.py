"""docs/api-reference.md is generated from the CRD (aliasop_dev.api_reference) and kept fresh."""

import re

import pytest

from aliasop.crd import build_crd
from aliasop.models import ConditionType
from aliasop_dev.api_reference import REFERENCE, render_reference

pytestmark = pytest.mark.timeout(60)


def test_committed_api_reference_is_current() -> None:
    assert REFERENCE.read_text() == render_reference(build_crd()), (
        f"{REFERENCE} is stale: run `make crds`"
    )


def test_reference_covers_every_field_of_the_crd() -> None:
    reference = render_reference(build_crd())
    root = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    missing: list[str] = []

    def walk(schema: dict, path: str) -> None:
        if "core/v1" in schema.get("description", ""):
            return  # Kubernetes' own types are named, not repeated
        for name, field in (schema.get("properties") or {}).items():
            if f"`{name}`" not in reference:
                missing.append(f"{path}.{name}")
            walk(field, f"{path}.{name}")
        if "items" in schema:
            walk(schema["items"], f"{path}[]")

    walk(root["properties"]["spec"], "spec")
    walk(root["properties"]["status"], "status")
    assert missing == []


def test_reference_names_what_users_look_for() -> None:
    reference = render_reference(build_crd())
    for needle in ("### `spec.rollout`", "`onFailure`", "`RevertAlias`", "`heldVersion`"):
        assert needle in reference, needle
    for condition in ConditionType:
        assert condition.value in reference, condition
    # A field's own line says what it is, its default and its checks.
    (poll,) = [
        line for line in reference.splitlines() if line.startswith("| `pollIntervalSeconds`")
    ]
    assert "integer" in poll and "`30`" in poll and "≥ 5" in poll


def test_table_cells_keep_their_pipes_escaped() -> None:
    crd = build_crd()
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["model"]["description"] = "a | b"
    row = next(line for line in render_reference(crd).splitlines() if line.startswith("| `model`"))
    assert "a \\| b" in row
    cells = re.split(r"(?<!\\)\|", row)[1:-1]
    assert len(cells) == 5 and cells[-1].strip() == "a \\| b"
