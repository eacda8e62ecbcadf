from pathlib import Path
from typing import Any

from aliasop.crd import build_crd, render_crd

CRD_FILE = Path(__file__).parents[2] / "crds" / "aliasop.io_modeldeployments.yaml"


def test_committed_crd_is_current() -> None:
    assert CRD_FILE.read_text() == render_crd(), "crds/ is stale: run `make crds`"


def test_crd_schema_is_structural() -> None:
    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}[{i}]")

    version = build_crd()["spec"]["versions"][0]
    walk(version["schema"], "schema")
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["model"]
    assert spec["properties"]["pollIntervalSeconds"]["minimum"] == 5
    assert spec["properties"]["replicas"]["minimum"] == 0
    columns = version["additionalPrinterColumns"]
    assert [c["name"] for c in columns if not c.get("priority")] == [
        "Alias",
        "Serving",
        "Ready",
        "Phase",
        "Age",
    ]
    assert [c["name"] for c in columns if c.get("priority")] == ["Model", "Target", "Message"]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_every_field_explains_itself() -> None:
    """`kubectl explain` shows these descriptions, nested fields included."""
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    undescribed: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        for name, field in (node.get("properties") or {}).items():
            if name != "metadata" and not field.get("description"):
                undescribed.append(f"{path}.{name}")
            walk(field, f"{path}.{name}")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    walk(schema, "")
    assert undescribed == []
    status = schema["properties"]["status"]["properties"]
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    assert status["lastResolvedTime"]["format"] == "date-time"
    history = status["history"]["items"]["properties"]
    assert history["startedAt"]["format"] == "date-time"
