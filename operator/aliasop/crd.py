"""Generate the ModelDeployment CRD from the pydantic models in `aliasop.models`.

Kubernetes wants a structural OpenAPI v3 schema: no `$ref`, no `anyOf` with null, no titles.
This module turns pydantic's JSON schema into one and adds what only a CRD can say.
"""

from __future__ import annotations

import copy
import functools
import json
from importlib import resources
from typing import Any

import yaml

from aliasop.analysis_models import (
    HEADER_NAMES_RULE,
    PROVIDER_RULE,
    TEMPLATE_RULE,
    THRESHOLD_RANGE_RULES,
    AnalysisStep,
)
from aliasop.builders import LONGEST_SUFFIX
from aliasop.models import (
    CANARY_REPLICAS_MESSAGE,
    CANARY_STEP_MESSAGE,
    CANARY_STEPS_MESSAGE,
    CATEGORY,
    CHALLENGER_CANARY_MESSAGE,
    CHALLENGER_REPLICAS_MESSAGE,
    DISRUPTION_BUDGET_MESSAGE,
    GROUP,
    KIND,
    PLURAL,
    POD_SPEC_SCHEMA,
    RESERVED_PREFIX,
    SELECTOR_LABEL_KEYS,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    ConditionType,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
)

Schema = dict[str, Any]

# Kubernetes' own schemas of the PodSpec fields serving passes through, as structural CRD
# schemas: made by `make k8s-schemas` (dev/aliasop_dev/k8s_schemas.py) from an API server's
# OpenAPI document.
CORE_V1_SCHEMAS = ("schemas", "core_v1.json")

# Children are named after the resource: a Service name must be a DNS-1035 label, and so
# must the canary's, with its suffix.
NAME_RULE = {
    "rule": "self.metadata.name.size() <= 63 && "
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
    "message": "metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', "
    "starting with a letter, at most 63 characters): it names the Deployment and Service",
}
SIDES_NAME_RULE = {
    "rule": "(self.spec.rollout.strategy != 'Canary' && !has(self.spec.challenger)) || "
    f"self.metadata.name.size() <= {63 - LONGEST_SUFFIX}",
    "message": f"with rollout.strategy Canary or a challenger, metadata.name may have at most "
    f"{63 - LONGEST_SUFFIX} characters: it names <name>-stable, <name>-canary and "
    "<name>-challenger",
}


# The keys of labels and annotations, as Kubernetes validates them: an optional DNS subdomain
# and "/", then a name of at most 63 characters.
KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)


def _keys_rule(what: str) -> Schema:
    return {
        "rule": f"self.all(k, k.size() <= 317 && k.matches(r'{KEY_PATTERN}'))",
        "message": f"{what} keys must be qualified names: an optional DNS subdomain prefix and "
        "'/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a "
        "letter or digit",
    }


def _reserved_rules(what: str, reserved: tuple[str, ...], why: str) -> list[Schema]:
    """One rule per reserved key, and one for the reserved prefix: each message names what
    is refused (a messageExpression naming the offending keys costs more than a CRD may)."""
    rules: list[Schema] = [
        {
            "rule": f"!('{key}' in self)",
            "message": f"{what} may not set {key}: {why}",
            "reason": "FieldValueForbidden",
        }
        for key in reserved
    ]
    rules.append(
        {
            "rule": f"!self.exists(k, k.startsWith('{RESERVED_PREFIX}'))",
            "message": f"{what} may not set keys under {RESERVED_PREFIX}: {why}",
            "reason": "FieldValueForbidden",
        }
    )
    return rules


# Pod labels must not break the Deployment's selector, nor claim aliasop's own labels.
POD_LABEL_RULES = [
    _keys_rule("podLabels"),
    *_reserved_rules(
        "podLabels",
        SELECTOR_LABEL_KEYS,
        f"aliasop sets the labels that select the serving pods, and those under {RESERVED_PREFIX}",
    ),
]
POD_ANNOTATION_RULES = [
    _keys_rule("podAnnotations"),
    *_reserved_rules("podAnnotations", (), f"aliasop sets the annotations under {RESERVED_PREFIX}"),
]
NODE_SELECTOR_RULES = [_keys_rule("nodeSelector")]


@functools.cache
def _pod_spec_schemas() -> dict[str, Schema]:
    text = resources.files("aliasop").joinpath(*CORE_V1_SCHEMAS).read_text()
    fields: dict[str, Schema] = json.loads(text)["podSpecFields"]
    return fields


def pod_spec_schema(field: str) -> Schema:
    """Kubernetes' structural schema of the core/v1 PodSpec field `field`."""
    return copy.deepcopy(_pod_spec_schemas()[field])


def structural(schema: Schema, defs: dict[str, Schema] | None = None) -> Schema:
    """Rewrite one pydantic JSON schema node (recursively) as a structural CRD schema."""
    defs = schema.get("$defs", {}) if defs is None else defs
    if POD_SPEC_SCHEMA in schema:  # typed loosely in the model: Kubernetes' schema, our words
        kubernetes = pod_spec_schema(schema[POD_SPEC_SCHEMA])
        return {**kubernetes, "description": schema.get("description", kubernetes["description"])}
    if "$ref" in schema:  # a nested model or enum; the field's own description is the better one
        nested = structural(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
        nested["description"] = schema.get("description", nested.get("description"))
        if schema.get("default") not in (None, {}, []):  # an enum's default
            nested["default"] = schema["default"]
        return nested
    types = {s.get("type") for s in schema.get("anyOf", [])}
    if types - {"null"} == {"integer", "string"}:  # an IntOrString, perhaps optional
        pattern = next(s.get("pattern") for s in schema["anyOf"] if s.get("type") == "string")
        described = {"description": schema["description"]} if "description" in schema else {}
        nullable = {"nullable": True} if "null" in types else {}
        return {"x-kubernetes-int-or-string": True, "pattern": pattern, **described, **nullable}
    if "anyOf" in schema:  # `X | None`: optional in a CRD means "may be absent"
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        merged = {**structural(options[0], defs), "nullable": True}
        for key in ("description", "default"):
            if schema.get(key) is not None:
                merged[key] = schema[key]
        return merged
    out: Schema = {}
    for key in (
        "type",
        "description",
        "format",
        "pattern",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "maxProperties",
        "minItems",
        "maxItems",
        "enum",
    ):
        if key in schema:
            out[key] = schema[key]
    if "const" in schema:
        out["enum"] = [schema["const"]]
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if schema.get("default") not in (None, {}, []):
        out["default"] = schema["default"]
    if out.get("type") == "object":
        properties = schema.get("properties")
        if properties:
            out["properties"] = {k: structural(v, defs) for k, v in properties.items()}
            if schema.get("required"):
                out["required"] = schema["required"]
        elif isinstance(schema.get("additionalProperties"), dict):  # a typed map
            out["additionalProperties"] = structural(schema["additionalProperties"], defs)
        else:  # free-form objects such as an EnvVar
            out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("type") == "array":
        out["items"] = structural(schema.get("items", {}), defs)
    if "properties" in schema and "type" not in out:
        out["type"] = "object"
        out["properties"] = {k: structural(v, defs) for k, v in schema["properties"].items()}
    return out


def analysis_step_schema() -> Schema:
    """The structural schema of a canary step's `analysis` (aliasop.analysis_models), with the
    CEL rules that say what its keywords cannot: one provider per metric, a bounded and ordered
    threshold range, known placeholders, header names; metric names unique (a list-map keyed
    by name). Optional objects are not nullable, so the API server prunes an explicit null and
    has() means what the rules take it to mean."""
    schema = structural(AnalysisStep.model_json_schema(by_alias=True, mode="validation"))
    metrics = schema["properties"]["metrics"]
    metrics.update({"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    metric = metrics["items"]
    metric["x-kubernetes-validations"] = [PROVIDER_RULE]
    fields = metric["properties"]
    threshold = fields["thresholdRange"]
    threshold["x-kubernetes-validations"] = THRESHOLD_RANGE_RULES
    for optional in (fields["prometheus"], fields["web"], *threshold["properties"].values()):
        optional.pop("nullable", None)
    for provider, field in (("prometheus", "address"), ("prometheus", "query"), ("web", "url")):
        fields[provider]["properties"][field]["x-kubernetes-validations"] = [TEMPLATE_RULE]
    fields["web"]["properties"]["headers"]["x-kubernetes-validations"] = [HEADER_NAMES_RULE]
    return copy.deepcopy(schema)


def _canary_rules(spec_schema: Schema) -> None:
    """The canary steps' schema, and what a Canary strategy or a challenger needs of the
    spec."""
    steps = spec_schema["properties"]["rollout"]["properties"]["steps"]
    step = steps["items"]
    fields = step["properties"]
    fields["analysis"] = {
        **analysis_step_schema(),
        "description": fields["analysis"]["description"],
    }
    for optional in fields.values():  # absent, not null: has() means set
        optional.pop("nullable", None)
    fields["pause"]["properties"]["seconds"].pop("nullable", None)
    step["x-kubernetes-validations"] = [
        {
            "rule": "(has(self.setWeight) ? 1 : 0) + (has(self.pause) ? 1 : 0) + "
            "(has(self.analysis) ? 1 : 0) == 1",
            "message": CANARY_STEP_MESSAGE,
        }
    ]
    spec_schema["x-kubernetes-validations"] = [
        {
            "rule": "self.rollout.strategy != 'Canary' || has(self.replicas)",
            "message": CANARY_REPLICAS_MESSAGE,
        },
        {
            "rule": "self.rollout.strategy != 'Canary' || size(self.rollout.steps) > 0",
            "message": CANARY_STEPS_MESSAGE,
        },
        {
            "rule": "!has(self.challenger) || has(self.replicas)",
            "message": CHALLENGER_REPLICAS_MESSAGE,
        },
        {
            "rule": "!has(self.challenger) || self.rollout.strategy != 'Canary'",
            "message": CHALLENGER_CANARY_MESSAGE,
        },
    ]
    spec_schema["properties"]["challenger"].pop("nullable", None)  # absent, not null


def _model_schema(model: type[ModelDeploymentSpec] | type[ModelDeploymentStatus]) -> Schema:
    return structural(model.model_json_schema(by_alias=True, mode="validation"))


def _status_schema() -> Schema:
    schema = _model_schema(ModelDeploymentStatus)
    # One condition per type: server-side apply and strategic merges key them by type.
    schema["properties"]["conditions"].update(
        {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
    )
    return schema


def _condition_column(name: str, type_: ConditionType) -> dict[str, Any]:
    return {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{type_}")].status',
    }


def build_crd() -> dict[str, Any]:
    spec_schema = _model_schema(ModelDeploymentSpec)
    spec_schema["properties"]["serving"]["default"] = {}
    spec_schema["properties"]["rollout"]["default"] = {}
    serving = spec_schema["properties"]["serving"]["properties"]
    for field, rules in (
        ("podLabels", POD_LABEL_RULES),
        ("podAnnotations", POD_ANNOTATION_RULES),
        ("nodeSelector", NODE_SELECTOR_RULES),
    ):
        serving[field]["x-kubernetes-validations"] = rules
    serving["disruptionBudget"]["x-kubernetes-validations"] = [
        {
            "rule": "has(self.minAvailable) != has(self.maxUnavailable)",
            "message": DISRUPTION_BUDGET_MESSAGE,
        }
    ]
    _canary_rules(spec_schema)
    column = "jsonPath"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": [CATEGORY],
                "listKind": f"{KIND}List",
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        # `kubectl scale mdep`, and HorizontalPodAutoscalers targeting it.
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [
                        {"name": "Alias", "type": "string", column: ".status.aliasVersion"},
                        {"name": "Serving", "type": "string", column: ".status.servingVersion"},
                        _condition_column("Ready", ConditionType.READY),
                        {"name": "Phase", "type": "string", column: ".status.phase"},
                        {"name": "Step", "type": "integer", column: ".status.canary.step"},
                        {"name": "Weight", "type": "integer", column: ".status.canary.weight"},
                        {"name": "Age", "type": "date", column: ".metadata.creationTimestamp"},
                        # -o wide
                        {"name": "Model", "type": "string", column: ".spec.model", "priority": 1},
                        {
                            "name": "Target",
                            "type": "string",
                            column: ".status.targetVersion",
                            "priority": 1,
                        },
                        {
                            "name": "Message",
                            "type": "string",
                            column: ".status.message",
                            "priority": 1,
                        },
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Serves an MLflow registered model at the version "
                            "one of its aliases points to, following the alias as it moves.",
                            "required": ["spec"],
                            "x-kubernetes-validations": [NAME_RULE, SIDES_NAME_RULE],
                            "properties": {
                                "apiVersion": {
                                    "type": "string",
                                    "description": "aliasop.io/v1alpha1",
                                },
                                "kind": {"type": "string", "description": KIND},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": _status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd() -> str:
    header = "# Generated by `aliasop crd` from operator/aliasop/models.py. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)
