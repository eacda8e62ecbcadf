import json
from pathlib import Path
from typing import Any

import pytest

from aliasop.crd import build_crd, pod_spec_schema, render_crd
from aliasop_dev import k8s_schemas

REPO = Path(__file__).parents[2]
CRD_FILE = REPO / "crds" / "aliasop.io_modeldeployments.yaml"
# The Helm chart ships the same CRD (helm installs its crds/ before the templates).
CHART_CRD_FILE = REPO / "charts" / "aliasop" / "crds" / "aliasop.io_modeldeployments.yaml"
CORE_V1_FILE = REPO / "operator" / "aliasop" / "schemas" / "core_v1.json"


@pytest.mark.parametrize("committed", [CRD_FILE, CHART_CRD_FILE], ids=["crds", "chart"])
def test_committed_crd_is_current(committed: Path) -> None:
    assert committed.read_text() == render_crd(), f"{committed} is stale: run `make crds`"


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
        "Step",
        "Weight",
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


def serving_schema() -> dict[str, Any]:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    properties: dict[str, Any] = spec["properties"]["serving"]["properties"]
    return properties


def test_pod_settings_take_the_kubernetes_schemas() -> None:
    serving = serving_schema()
    for field in ("tolerations", "affinity", "topologySpreadConstraints", "imagePullSecrets"):
        ours, kubernetes = dict(serving[field]), pod_spec_schema(field)
        assert "core/v1" in ours.pop("description"), field  # our words, naming the type
        del kubernetes["description"]
        assert ours == kubernetes, field

    toleration = serving["tolerations"]["items"]["properties"]
    assert {"Equal", "Exists"} <= set(toleration["operator"]["enum"])
    assert toleration["tolerationSeconds"]["type"] == "integer"
    terms = serving["affinity"]["properties"]["nodeAffinity"]["properties"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    requirement = terms["required"], terms["properties"]["nodeSelectorTerms"]["items"]
    assert requirement[0] == ["nodeSelectorTerms"]
    expression = requirement[1]["properties"]["matchExpressions"]["items"]
    assert expression["required"] == ["key", "operator"]
    spread = serving["topologySpreadConstraints"]
    assert spread["x-kubernetes-list-type"] == "map"
    assert spread["x-kubernetes-list-map-keys"] == ["topologyKey", "whenUnsatisfiable"]
    assert {"maxSkew", "topologyKey", "whenUnsatisfiable"} <= set(spread["items"]["required"])
    assert "default" not in spread["items"]["properties"]["maxSkew"]  # it is required
    secrets = serving["imagePullSecrets"]
    assert secrets["x-kubernetes-list-map-keys"] == ["name"]
    # A list-map key must be required or have a default: Kubernetes' default is kept.
    assert secrets["items"]["properties"]["name"]["default"] == ""


def test_the_kubernetes_schemas_come_from_the_test_clusters_version() -> None:
    made = json.loads(CORE_V1_FILE.read_text())
    versions = (REPO / "tests" / "cluster" / "versions.env").read_text()
    assert f"K8S_VERSION={made['kubernetesVersion']}" in versions.splitlines(), (
        "operator/aliasop/schemas/core_v1.json is from another Kubernetes: run `make k8s-schemas`"
    )
    assert made["source"] == "/openapi/v3/api/v1"
    assert "k8s_schemas" in made["comment"]


def test_pod_labels_that_break_the_selector_are_refused_by_rules() -> None:
    serving = serving_schema()
    label_rules = serving["podLabels"]["x-kubernetes-validations"]
    rules = {rule["rule"]: rule["message"] for rule in label_rules}
    for key in (
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/managed-by",
    ):
        assert f"podLabels may not set {key}" in rules[f"!('{key}' in self)"]
    assert "keys under aliasop.io/" in rules["!self.exists(k, k.startsWith('aliasop.io/'))"]
    annotation_rules = serving["podAnnotations"]["x-kubernetes-validations"]
    assert any("may not set keys under aliasop.io/" in r["message"] for r in annotation_rules)
    for field in ("podLabels", "podAnnotations", "nodeSelector"):
        assert "maxProperties" in serving[field]  # bounds what the rules cost the API server
        assert any(
            "qualified names" in r["message"] for r in serving[field]["x-kubernetes-validations"]
        )
    assert serving["podLabels"]["additionalProperties"]["maxLength"] == 63


def test_the_crd_fits_a_client_side_apply() -> None:
    """`kubectl apply -f crds/` (README) keeps the whole object in an annotation of at most
    256 KiB: Kubernetes' schemas must not grow the CRD past it."""
    assert len(json.dumps(build_crd())) < 200_000


OPENAPI: dict[str, Any] = {
    "components": {
        "schemas": {
            "io.k8s.api.core.v1.PodSpec": {
                "type": "object",
                "properties": {
                    "tolerations": {
                        "description": "If specified, the pod's tolerations.",
                        "type": "array",
                        "items": {
                            "default": {},
                            "allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.T"}],
                        },
                        "x-kubernetes-list-type": "atomic",
                    },
                    "affinity": {
                        "description": "Affinity.",
                        "allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.T"}],
                    },
                    "topologySpreadConstraints": {
                        "description": "Spread " + "very " * 100 + "long. Second sentence.",
                        "type": "string",
                        "format": "int-or-string",
                    },
                    "imagePullSecrets": {
                        "description": "Secrets.",
                        "type": "array",
                        "items": {
                            "default": {},
                            "allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.R"}],
                        },
                        "x-kubernetes-list-map-keys": ["name"],
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-patch-merge-key": "name",
                        "x-kubernetes-patch-strategy": "merge",
                    },
                },
            },
            "io.k8s.api.core.v1.T": {
                "description": "A toleration.",
                "type": "object",
                "required": ["maxSkew"],
                "properties": {
                    "maxSkew": {"description": "Skew.", "type": "integer", "default": 0},
                    "operator": {
                        "description": "Op.\n\nPossible enum values:\n - `Equal`",
                        "type": "string",
                        "enum": ["Equal", "Exists"],
                    },
                },
            },
            "io.k8s.api.core.v1.R": {
                "description": "A reference.",
                "type": "object",
                "properties": {"name": {"description": "Name.", "type": "string", "default": ""}},
                "x-kubernetes-map-type": "atomic",
            },
        }
    }
}


def test_the_schema_script_inlines_refs_and_keeps_only_what_a_crd_takes() -> None:
    fields = k8s_schemas.fragments(OPENAPI, "v1.99.0")["podSpecFields"]
    toleration = {
        "description": "A toleration.",
        "type": "object",
        "properties": {
            # Go's zero value as a default would make the required field always present.
            "maxSkew": {"description": "Skew.", "type": "integer"},
            "operator": {"description": "Op.", "type": "string", "enum": ["Equal", "Exists"]},
        },
        "required": ["maxSkew"],
    }
    assert fields["tolerations"] == {
        "description": "If specified, the pod's tolerations.",
        "type": "array",
        "x-kubernetes-list-type": "atomic",
        "items": toleration,
    }
    assert fields["affinity"] == {**toleration, "description": "Affinity."}
    assert fields["topologySpreadConstraints"] == {
        "description": "Spread " + "very " * 100 + "long.",
        "x-kubernetes-int-or-string": True,
    }
    assert fields["imagePullSecrets"] == {
        "description": "Secrets.",
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
        "items": {
            "description": "A reference.",
            "type": "object",
            "x-kubernetes-map-type": "atomic",
            "properties": {"name": {"description": "Name.", "type": "string", "default": ""}},
        },
    }


def test_the_schema_script_stops_at_what_a_structural_schema_cannot_say() -> None:
    document = json.loads(json.dumps(OPENAPI))
    document["components"]["schemas"]["io.k8s.api.core.v1.T"]["properties"]["operator"] = {
        "anyOf": [{"type": "string"}, {"type": "integer"}]
    }
    with pytest.raises(ValueError, match="anyOf"):
        k8s_schemas.fragments(document, "v1.99.0")
