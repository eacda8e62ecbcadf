"""Write operator/aliasop/schemas/core_v1.json: Kubernetes' own schemas of the PodSpec fields
that `spec.serving` passes through (tolerations, affinity, topologySpreadConstraints,
imagePullSecrets), as structural CRD schema fragments.

    make k8s-schemas                        # the test cluster's API server, then `make crds`
    python -m aliasop_dev.k8s_schemas       # kubectl and KUBECONFIG from the environment
    python -m aliasop_dev.k8s_schemas --openapi v1.json --kubernetes-version v1.35.4

The source is what an API server publishes (`kubectl get --raw /openapi/v3/api/v1`). A CRD
schema must be structural, so each field's schema is rewritten: every `$ref` (and the
`allOf: [{$ref}]` wrapping it) is inlined, long descriptions are cut to their first sentence,
the `x-kubernetes-patch-*` markers of strategic merge patch (which a CRD cannot carry) and the
`default`s (Go zero values, which in a CRD would be applied, e.g. filling a required maxSkew
with 0) are dropped, except the defaults a list-map key needs. The list and map markers
(`x-kubernetes-list-type`, `-list-map-keys`, `-map-type`) are kept. Anything else, such as an
`anyOf`, stops the script: a new Kubernetes version that brings one needs a look first.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Schema = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "operator" / "aliasop" / "schemas" / "core_v1.json"
OPENAPI_PATH = "/openapi/v3/api/v1"
POD_SPEC = "io.k8s.api.core.v1.PodSpec"
# PodSpec fields whose schemas aliasop's CRD takes as Kubernetes publishes them.
FIELDS = ("tolerations", "affinity", "topologySpreadConstraints", "imagePullSecrets")
# Descriptions longer than this are cut to their first sentence (`kubectl explain` shows them;
# the CRD must stay well under the 256 KiB that `kubectl apply` without --server-side allows).
MAX_DESCRIPTION = 400
KEPT = (
    "type",
    "format",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
)
DROPPED = ("default", "x-kubernetes-patch-merge-key", "x-kubernetes-patch-strategy")


def short(description: str) -> str:
    """Kubernetes' description without its "Possible enum values" list (the schema has the
    enum); its first sentence only when longer than MAX_DESCRIPTION."""
    text = description.split("\n\nPossible enum values:")[0].strip()
    if len(text) <= MAX_DESCRIPTION:
        return text
    first = re.split(r"(?<=[a-z0-9)\]`'\"])\.(\s|$)", text, maxsplit=1)[0]
    return first if first.endswith(".") else first + "."


def structural(
    node: Schema,
    definitions: dict[str, Schema],
    map_keys: frozenset[str] = frozenset(),
    keep_default: bool = False,
) -> Schema:
    """One OpenAPI v3 node of the API server's document, as a structural CRD schema.

    `map_keys`: the node is the items of a list-map with these keys, which must be required
    or have a default: their defaults are kept (`keep_default`, for the property itself)."""
    node = dict(node)
    ref = node.pop("$ref", None)
    all_of = node.pop("allOf", None)
    if all_of is not None:  # how the document gives a field's own description next to a $ref
        if len(all_of) != 1 or set(all_of[0]) != {"$ref"}:
            raise ValueError(f"unexpected allOf: {all_of}")
        ref = all_of[0]["$ref"]
    if ref is not None:
        if set(node) - {"description", "default"}:
            raise ValueError(f"unexpected keys next to a $ref: {node}")
        target = structural(definitions[ref.rsplit("/", 1)[-1]], definitions, map_keys)
        if "description" in node:  # the field's own description is the better one
            target["description"] = short(node["description"])
        if keep_default and "default" in node:
            target["default"] = node["default"]
        return target
    unknown = set(node) - {*KEPT, *DROPPED, "description", "items", "properties", "required"}
    unknown.discard("additionalProperties")
    if unknown:
        raise ValueError(f"cannot make a structural schema of {sorted(unknown)}: {node}")
    out: Schema = {}
    if "description" in node:
        out["description"] = short(node["description"])
    for key in KEPT:
        if key in node:
            out[key] = node[key]
    if keep_default and "default" in node:
        out["default"] = node["default"]
    if node.get("format") == "int-or-string":  # IntOrString: a CRD says it with its marker
        out = {k: v for k, v in out.items() if k not in ("type", "format")}
        out["x-kubernetes-int-or-string"] = True
    if "properties" in node:
        required = set(node.get("required", ()))
        out["properties"] = {
            name: structural(value, definitions, keep_default=name in map_keys - required)
            for name, value in node["properties"].items()
        }
        if required:
            out["required"] = list(node["required"])
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = structural(node["additionalProperties"], definitions)
    if "items" in node:
        keys = node.get("x-kubernetes-list-map-keys", ())
        out["items"] = structural(node["items"], definitions, frozenset(keys))
    if "type" not in out and "x-kubernetes-int-or-string" not in out:
        raise ValueError(f"a structural schema needs a type: {node}")
    return out


def fragments(document: Schema, kubernetes_version: str) -> Schema:
    definitions: dict[str, Schema] = document["components"]["schemas"]
    pod_spec = definitions[POD_SPEC]["properties"]
    return {
        "comment": (
            "Generated by `python -m aliasop_dev.k8s_schemas` (make k8s-schemas) from the "
            f"OpenAPI document an API server of Kubernetes {kubernetes_version} publishes at "
            f"{OPENAPI_PATH}: the schemas of these PodSpec fields with every $ref inlined, as "
            "structural CRD schemas (see dev/aliasop_dev/k8s_schemas.py). aliasop.crd puts "
            "them in the ModelDeployment CRD. Do not edit."
        ),
        "kubernetesVersion": kubernetes_version,
        "source": OPENAPI_PATH,
        "podSpecFields": {name: structural(pod_spec[name], definitions) for name in FIELDS},
    }


def _kubectl_json(kubectl: str, path: str) -> Schema:
    result = subprocess.run(
        [kubectl, "get", "--raw", path], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"kubectl get --raw {path} failed:\n{result.stderr}")
    body: Schema = json.loads(result.stdout)
    return body


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aliasop_dev.k8s_schemas", description=__doc__)
    parser.add_argument("--kubectl", default="kubectl", help="kubectl to ask the API server with")
    parser.add_argument("--openapi", type=Path, help=f"a saved {OPENAPI_PATH} instead")
    parser.add_argument("--kubernetes-version", help="with --openapi: the version it came from")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT}")
    args = parser.parse_args(argv)
    if args.openapi:
        if not args.kubernetes_version:
            parser.error("--openapi needs --kubernetes-version")
        document, version = json.loads(args.openapi.read_text()), args.kubernetes_version
    else:
        document = _kubectl_json(args.kubectl, OPENAPI_PATH)
        version = str(_kubectl_json(args.kubectl, "/version")["gitVersion"])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(fragments(document, version), indent=1) + "\n")
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes, Kubernetes {version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
