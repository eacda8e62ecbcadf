from pathlib import Path

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
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Model",
        "Serving",
        "Target",
        "Phase",
        "Age",
    ]
    assert version["subresources"] == {"status": {}}
