"""docs/api-reference.md, generated from the ModelDeployment CRD: every field of spec and status
with its type, default, constraints and description, the columns of `kubectl get`, and the
rules the API server enforces.

The CRD is generated from the pydantic models (aliasop.crd), so the descriptions are edited in
`operator/aliasop/models.py` and `analysis_models.py`, never in the reference. `make crds`
writes both; tests/unit/test_api_reference.py fails when the committed reference is stale.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from aliasop.crd import build_crd

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "docs" / "api-reference.md"

Schema = dict[str, Any]

HEADER = """\
<!-- Generated from the CRD by `make crds` (python -m aliasop_dev.api_reference): edit the
descriptions in operator/aliasop/models.py, not this file. tests/unit/test_api_reference.py
fails when it is stale. -->
"""

# Kubernetes' own types that the CRD embeds (their schemas come from the API server, see
# `make k8s-schemas`): the reference names them and links to Kubernetes' documentation rather
# than repeating them. Our descriptions name them as "core/v1 <Type>".
KUBERNETES_API = "https://kubernetes.io/docs/reference/kubernetes-api/"


def _cell(text: str) -> str:
    """Text that keeps a Markdown table row intact."""
    return text.replace("|", "\\|").replace("\n", " ")


def _prose(text: str) -> str:
    """A description as Markdown: `<name>` outside code spans is text, not an HTML tag."""
    parts = text.split("`")
    parts[::2] = [part.replace("<", "&lt;") for part in parts[::2]]
    return "`".join(parts)


def _code(value: object) -> str:
    text = value if isinstance(value, str) and value else json.dumps(value, separators=(", ", ": "))
    return f"`{text}`"


def _is_kubernetes_type(schema: Schema) -> bool:
    return "core/v1" in schema.get("description", "")


def _is_object(schema: Schema) -> bool:
    """An object with fields of its own: it gets a table."""
    return bool(schema.get("properties")) and not _is_kubernetes_type(schema)


def _type(schema: Schema) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "integer or string"
    kind = schema.get("type", "any")
    if kind == "array":
        items = schema.get("items", {})
        if _is_kubernetes_type(schema) and items.get("type") == "object":
            return "array of object (Kubernetes)"
        return f"array of {_type(items)}"
    if kind == "object":
        if _is_kubernetes_type(schema):
            return "object (Kubernetes)"
        values = schema.get("additionalProperties")
        if isinstance(values, dict):
            return f"map of {_type(values)}"
        if schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get("properties"):
            return "object (any fields)"
    return str(kind)


def _constraints(schema: Schema) -> list[str]:
    """What the schema checks of a value, as `kubectl apply` would refuse it."""
    found: list[str] = []
    target = schema.get("items", schema) if schema.get("type") == "array" else schema
    if "enum" in target:
        found.append("one of " + ", ".join(_code(v) for v in target["enum"]))
    for key, label in (
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("minLength", "length ≥"),
        ("maxLength", "length ≤"),
    ):
        if key in target:
            found.append(f"{label} {target[key]}")
    for key, label in (("minItems", "items ≥"), ("maxItems", "items ≤")):
        if key in schema:
            found.append(f"{label} {schema[key]}")
    if "maxProperties" in schema:
        found.append(f"entries ≤ {schema['maxProperties']}")
    if "pattern" in target:
        found.append(f"pattern {_code(target['pattern'])}")
    if target.get("format"):
        found.append(f"format {target['format']}")
    if schema.get("nullable"):
        found.append("nullable")
    return found


def _objects(schema: Schema, path: str) -> Iterator[tuple[str, Schema]]:
    """Each object with fields of its own, depth first, after its parent."""
    yield path, schema
    for name, field in schema.get("properties", {}).items():
        child = f"{path}.{name}"
        if _is_kubernetes_type(field):
            continue
        if _is_object(field):
            yield from _objects(field, child)
        elif field.get("type") == "array" and _is_object(field.get("items", {})):
            yield from _objects(field["items"], f"{child}[]")


def _field_row(name: str, field: Schema, required: bool, path: str) -> str:
    description = _prose(field.get("description", ""))
    nested = field.get("items", {}) if field.get("type") == "array" else field
    if _is_kubernetes_type(field):
        description += f" See the [Kubernetes API reference]({KUBERNETES_API})."
    elif _is_object(nested):
        description += f" Fields: `{path}.{name}{'[]' if nested is not field else ''}` below."
    default = _code(field["default"]) if "default" in field else ""
    notes = ["**required**"] if required else []
    notes += _constraints(field)
    cells = [f"`{name}`", _type(field), default, "; ".join(notes), description]
    return "| " + " | ".join(_cell(c) if i else c for i, c in enumerate(cells)) + " |"


def _table(path: str, schema: Schema) -> list[str]:
    required = set(schema.get("required", []))
    lines = [f"### `{path}`", ""]
    if schema.get("description"):
        lines += [_prose(schema["description"]), ""]
    for rule in schema.get("x-kubernetes-validations", []):
        lines.append(f"- Rule: {_prose(rule['message'])} (`{rule['rule']}`)")
    if schema.get("x-kubernetes-validations"):
        lines.append("")
    lines += [
        "| Field | Type | Default | Checks | Description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, field in schema["properties"].items():
        lines.append(_field_row(name, field, name in required, path))
    return [*lines, ""]


def render_reference(crd: Schema) -> str:
    """The reference of the CRD's single version."""
    spec = crd["spec"]
    names = spec["names"]
    (version,) = spec["versions"]
    root = version["schema"]["openAPIV3Schema"]
    api_version = f"{spec['group']}/{version['name']}"
    scale = version.get("subresources", {}).get("scale")
    lines = [
        HEADER,
        f"# API reference: {names['kind']} ({api_version})",
        "",
        _prose(root.get("description", "")),
        "",
        "| | |",
        "| --- | --- |",
        f"| apiVersion | `{api_version}` |",
        f"| kind | `{names['kind']}` (list: `{names['listKind']}`) |",
        f"| scope | {spec['scope']} |",
        f"| plural, singular | `{names['plural']}`, `{names['singular']}` |",
        f"| short names | {', '.join(f'`{n}`' for n in names.get('shortNames', []))} |",
        f"| categories | {', '.join(f'`{c}`' for c in names.get('categories', []))} "
        f"(`kubectl get {names.get('categories', [''])[0]}`) |",
    ]
    subresources = ["`status`"]
    if scale:
        subresources.append(
            f"`scale` (replicas `{scale['specReplicasPath']}`, "
            f"status `{scale['statusReplicasPath']}`, selector `{scale['labelSelectorPath']}`)"
        )
    lines += [f"| subresources | {', '.join(subresources)} |", ""]

    lines += [
        f"## `kubectl get {names['shortNames'][0]}`",
        "",
        "| Column | Value | Shown |",
        "| --- | --- | --- |",
    ]
    for column in version.get("additionalPrinterColumns", []):
        shown = "with `-o wide`" if column.get("priority") else "always"
        lines.append(f"| {column['name']} | `{_cell(column['jsonPath'])}` | {shown} |")
    lines.append("")

    rules = root.get("x-kubernetes-validations", [])
    if rules:
        lines += ["## Rules on the whole resource", ""]
        lines += [f"- {_prose(rule['message'])} (`{rule['rule']}`)" for rule in rules]
        lines.append("")

    for part in ("spec", "status"):
        lines += [f"## {part}", ""]
        for path, schema in _objects(root["properties"][part], part):
            lines += _table(path, schema)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aliasop_dev.api_reference", description=__doc__
    )
    parser.add_argument("--output", type=Path, default=REFERENCE, help=f"default: {REFERENCE}")
    args = parser.parse_args(argv)
    args.output.write_text(render_reference(build_crd()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
