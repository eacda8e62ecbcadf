"""Pure builders: a ModelDeployment and a resolved version -> the Deployment and Service.

The pod template pins the immutable version (`models:/<name>/<version>`), never the alias:
changing the version in the template is what makes Kubernetes roll the pods.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aliasop.domain import CANARY, CHALLENGER, MAIN, Owner, PinnedVersion
from aliasop.models import (
    GROUP,
    INSTANCE_LABEL,
    KIND,
    MANAGED_BY_LABEL,
    NAME_LABEL,
    VERSION,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
)

Manifest = dict[str, Any]

MANAGED_BY = "aliasop"
FIELD_MANAGER = "aliasop"  # of server-side apply
# Holds a Deployment's replicas for a moment when a spec stops setting them (see
# get_replicas_handover).
HANDOVER_FIELD_MANAGER = "aliasop-replicas-handover"
VERSION_LABEL = f"{GROUP}/model-version"
# Which side a serving pod is on (Canary strategy): per-side Services select by it, and request
# metrics can be split by it.
VARIANT_LABEL = f"{GROUP}/variant"
# Children named <name>-<suffix>: the canary's and the challenger's Deployments, and a Service
# per side (the main side's is <name>-stable).
STABLE_SUFFIX = "stable"
SUFFIXES = (STABLE_SUFFIX, CANARY, CHALLENGER)
LONGEST_SUFFIX = 1 + max(len(suffix) for suffix in SUFFIXES)
MODEL_URI_ANNOTATION = f"{GROUP}/model-uri"
RUN_ID_ANNOTATION = f"{GROUP}/run-id"
ALIAS_ANNOTATION = f"{GROUP}/alias"
# Set by a person on an existing Deployment or Service (no controller) to hand it over to the
# ModelDeployment it names: aliasop never takes an object it does not control otherwise
# (kube.Cluster; docs/migrating.md).
ADOPT_ANNOTATION = f"{GROUP}/adopt"
SERVING_CONTAINER = "server"
DOWNLOAD_CONTAINER = "download"
# Where the scoring server may write under a read-only root filesystem (the image sets
# HOME=/tmp too, for MLflow's caches).
WRITABLE_DIRS = {"tmp": "/tmp"}
# The pinned version's files, downloaded once per pod by the init container (an emptyDir:
# a restarted server starts from them again without a download).
MODEL_VOLUME, MODEL_DIR = "model", "/var/lib/aliasop/model"
# How long a stopping server may take to finish the requests in flight, after its drain:
# MLflow's scoring server gives a request that long by default.
IN_FLIGHT_SECONDS = 60
# The server: uvicorn running MLflow's scoring app as PID 1, the command `mlflow models serve
# --env-manager local` would start as its child (scoring_server.get_cmd). The `mlflow` CLI as
# PID 1 ignores SIGTERM; uvicorn stops accepting, finishes the requests in flight and exits.
# The app finds the model through a variable private to MLflow: tests/unit/test_builders.py
# checks both names against the installed MLflow.
SERVING_APP = "mlflow.pyfunc.scoring_server.app:app"
SERVING_MODEL_PATH_ENV = "__pyfunc_model_path__"


@dataclass(frozen=True)
class ServingDefaults:
    """Operator-wide values used where the spec leaves a field empty."""

    image: str
    tracking_uri: str
    # Where people open MLflow's UI, when the tracking URI is an address only the operator
    # reaches (ALIASOP_MLFLOW_UI_URL); empty: the tracking URI.
    mlflow_ui_url: str = ""


def get_selector_labels(owner: Owner) -> dict[str, str]:
    # Immutable once the Deployment exists: never put the version here.
    return {
        NAME_LABEL: "model-server",
        INSTANCE_LABEL: owner.name,
        MANAGED_BY_LABEL: MANAGED_BY,
    }


def get_selector(owner: Owner) -> str:
    """The serving pods' label selector as a string (`status.selector`, for scaling)."""
    return ",".join(f"{key}={value}" for key, value in get_selector_labels(owner).items())


def get_tracking_uri(spec: ModelDeploymentSpec, defaults: ServingDefaults) -> str:
    return spec.tracking_uri or defaults.tracking_uri


def with_version_url(
    status: ModelDeploymentStatus, spec: ModelDeploymentSpec, defaults: ServingDefaults
) -> ModelDeploymentStatus:
    """`status` with servingVersionUrl: the MLflow UI page of the version that serves (a
    spec's own tracking server is its own UI; the operator's default may have a public one)."""
    base = spec.tracking_uri or defaults.mlflow_ui_url or defaults.tracking_uri
    url = None
    if status.serving_version is not None:
        model = quote(spec.model_uri.name, safe="")
        url = f"{base.rstrip('/')}/#/models/{model}/versions/{status.serving_version}"
    if url == status.serving_version_url:
        return status
    return status.model_copy(update={"serving_version_url": url})


def get_download_args(pinned_uri: str) -> list[str]:
    """Arguments of `mlflow artifacts download`: one pinned version's files into MODEL_DIR."""
    return ["artifacts", "download", "--artifact-uri", pinned_uri, "--dst-path", MODEL_DIR]


def get_serving_args(port: int, workers: int) -> list[str]:
    """Arguments of `uvicorn` serving the downloaded version (SERVING_MODEL_PATH_ENV names it)."""
    return ["--host", "0.0.0.0", "--port", str(port), "--workers", str(workers), SERVING_APP]


def service_suffix(variant: str) -> str:
    """The suffix of a side's own Service: the main side's is <name>-stable."""
    return STABLE_SUFFIX if variant == MAIN else variant


def child_name(owner: Owner, suffix: str = "") -> str:
    return f"{owner.name}-{suffix}" if suffix else owner.name


def get_variant_labels(spec: ModelDeploymentSpec, variant: str) -> dict[str, str]:
    """The variant label of a side's pods: only where there are sides (a canary, a
    challenger), so that a resource without keeps the pod template it always had (no restart
    at an operator upgrade)."""
    return {VARIANT_LABEL: variant} if spec.sides or variant != MAIN else {}


def get_deployment(
    owner: Owner,
    spec: ModelDeploymentSpec,
    pin: PinnedVersion,
    defaults: ServingDefaults,
    *,
    variant: str = MAIN,
    replicas: int | None = None,
) -> Manifest:
    """The Deployment of one side: the resource's own (`variant` main), or its canary's or
    challenger's (`<name>-canary`, `<name>-challenger`, whose selector adds the variant
    label, so that no Deployment's pods are another's). `replicas` overrides spec.replicas
    (a side's share)."""
    uri = spec.model_uri
    serving = spec.serving
    selector = get_selector_labels(owner)
    if variant != MAIN:
        selector = {**selector, VARIANT_LABEL: variant}
    labels = {
        **get_selector_labels(owner),
        **get_variant_labels(spec, variant),
        VERSION_LABEL: pin.version,
    }
    # The spec's own pod labels and annotations go first so that aliasop's win (the CRD refuses
    # them anyway): the selector must keep selecting the pods.
    pod_labels = {**serving.pod_labels, **labels}
    env: list[dict[str, Any]] = [
        {"name": "MLFLOW_TRACKING_URI", "value": get_tracking_uri(spec, defaults)},
        *(e.model_dump(by_alias=True, exclude_none=True) for e in serving.env),
    ]
    # Both containers: the same image, resources (so the pod asks for no more than the
    # server needs) and hardening; the downloaded files are the server's, read-only.
    common: Manifest = {
        "image": serving.image or defaults.image,
        "env": env,
        "resources": serving.resources.model_dump(exclude_defaults=True),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    writable = [{"name": n, "mountPath": p} for n, p in WRITABLE_DIRS.items()]
    # A failed download shows as the pod's Init:Error instead of a serving container that
    # crash-loops; the tail of its log becomes the termination message, so the reason shows
    # in the pod's status and `kubectl describe` too.
    download: Manifest = {
        "name": DOWNLOAD_CONTAINER,
        **copy.deepcopy(common),
        "command": ["mlflow"],
        "args": get_download_args(uri.pinned(pin.version)),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [*writable, {"name": MODEL_VOLUME, "mountPath": MODEL_DIR}],
    }
    if serving.credentials_secret:
        download["envFrom"] = [{"secretRef": {"name": serving.credentials_secret}}]
    container: Manifest = {
        "name": SERVING_CONTAINER,
        **common,
        "command": ["uvicorn"],
        "args": get_serving_args(serving.port, serving.workers),
        "env": [*env, {"name": SERVING_MODEL_PATH_ENV, "value": MODEL_DIR}],
        "ports": [{"name": "http", "containerPort": serving.port, "protocol": "TCP"}],
        "readinessProbe": _probe(period=5, failures=3),
        # Loading a model can take a while; liveness starts counting only once it is up.
        "startupProbe": _probe(period=5, failures=120),
        "livenessProbe": _probe(period=10, failures=6),
        "volumeMounts": [
            *writable,
            {"name": MODEL_VOLUME, "mountPath": MODEL_DIR, "readOnly": True},
        ],
    }
    # A stopping pod leaves the Service's endpoints at once, but kube-proxy and load balancers
    # learn of it a moment later: it keeps serving that long, then SIGTERM makes uvicorn stop
    # accepting, finish what is in flight (within the grace period below) and exit. No sleep
    # at all for 0: Kubernetes before 1.33 refuses a preStop sleep of 0 seconds.
    if serving.drain_seconds:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": serving.drain_seconds}}}
    model_volume: Manifest = {"name": MODEL_VOLUME, "emptyDir": {}}
    if serving.storage.size_limit is not None:
        model_volume["emptyDir"]["sizeLimit"] = serving.storage.size_limit
    deployment_spec: Manifest = {
        "selector": {"matchLabels": selector},
        "progressDeadlineSeconds": spec.rollout.progress_deadline_seconds,
        "strategy": {
            "type": "RollingUpdate",
            # Never drop serving capacity during a rollout.
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
        },
        "template": {
            "metadata": {
                "labels": pod_labels,
                "annotations": {
                    **serving.pod_annotations,
                    MODEL_URI_ANNOTATION: uri.pinned(pin.version),
                    RUN_ID_ANNOTATION: pin.run_id,
                    ALIAS_ANNOTATION: uri.alias,
                },
            },
            "spec": {
                # A ServiceAccount gives the pods a cloud identity (IRSA, Workload Identity)
                # without the Kubernetes API token in the serving container.
                "automountServiceAccountToken": False,
                **_pod_settings(spec),
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 10001,
                    "runAsGroup": 10001,
                    "fsGroup": 10001,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "terminationGracePeriodSeconds": serving.drain_seconds + IN_FLIGHT_SECONDS,
                "initContainers": [download],
                "containers": [container],
                "volumes": [*({"name": n, "emptyDir": {}} for n in WRITABLE_DIRS), model_volume],
            },
        },
    }
    # Absent replicas leave the field to whoever else owns it (an HPA); server-side apply
    # then neither sets nor resets it.
    replicas = spec.replicas if replicas is None else replicas
    if replicas is not None:
        deployment_spec["replicas"] = replicas
    name = child_name(owner, "" if variant == MAIN else variant)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _child_metadata(owner, labels, name),
        "spec": deployment_spec,
    }


def _pod_settings(spec: ModelDeploymentSpec) -> Manifest:
    """The pod spec fields of `spec.serving` that are set, as the API server validated them."""
    serving = spec.serving
    settings: Manifest = {
        "serviceAccountName": serving.service_account_name,
        "nodeSelector": serving.node_selector,
        "tolerations": serving.tolerations,
        "affinity": serving.affinity,
        "topologySpreadConstraints": serving.topology_spread_constraints,
        "imagePullSecrets": serving.image_pull_secrets,
        "priorityClassName": serving.priority_class_name,
    }
    return {key: copy.deepcopy(value) for key, value in settings.items() if value}


def get_replicas_handover(owner: Owner, replicas: int) -> Manifest:
    """Applied as HANDOVER_FIELD_MANAGER before a Deployment whose spec stopped setting
    `replicas`: without it, the apply that no longer sets them would leave the field without
    an owner, and the API server would reset it to 1 (kubernetes/kubernetes#67135) until an
    HPA scales back up. With it, the count stays until whoever scales next takes it over."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        # The owner too: only the Deployment it controls is written (kube.Cluster).
        "metadata": {
            "name": owner.name,
            "namespace": owner.namespace,
            "ownerReferences": _owner_references(owner),
        },
        "spec": {"replicas": replicas},
    }


def get_service(owner: Owner, spec: ModelDeploymentSpec, variant: str = "") -> Manifest:
    """The Service of every serving pod, or (`variant`) of one side's pods only: <name>-stable
    for the main side, <name>-canary and <name>-challenger for the others."""
    selector = get_selector_labels(owner)
    name = owner.name
    if variant:
        selector = {**selector, VARIANT_LABEL: variant}
        name = child_name(owner, service_suffix(variant))
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _child_metadata(owner, get_selector_labels(owner), name),
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": spec.serving.port, "targetPort": "http"}],
        },
    }


def _probe(period: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": "/ping", "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _child_metadata(owner: Owner, labels: dict[str, str], name: str = "") -> Manifest:
    return {
        "name": name or owner.name,
        "namespace": owner.namespace,
        "labels": {**owner.labels, **labels},
        "ownerReferences": _owner_references(owner),
    }


def _owner_references(owner: Owner) -> list[Manifest]:
    return [
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": owner.name,
            "uid": owner.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def get_disruption_budget(owner: Owner, spec: ModelDeploymentSpec) -> Manifest:
    """The serving pods' PodDisruptionBudget; without `spec.serving.disruptionBudget` it is
    not applied (and one left from before is deleted)."""
    budget = spec.serving.disruption_budget
    limits = budget.model_dump(by_alias=True, exclude_none=True) if budget is not None else {}
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _child_metadata(owner, get_selector_labels(owner)),
        "spec": {**limits, "selector": {"matchLabels": get_selector_labels(owner)}},
    }


def get_owner_name(child: Mapping[str, Any]) -> str | None:
    """The name of the ModelDeployment that controls `child` (an object as the API server
    returns it); None when no ModelDeployment does."""
    reference = get_controller(child)
    if reference is not None and reference.get("kind") == KIND:
        return str(reference.get("name"))
    return None


def get_controller(child: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ownerReference of `child`'s controller (a manifest, or an object as the API server
    returns it); None when nothing controls it."""
    references = (child.get("metadata") or {}).get("ownerReferences") or []
    return next((r for r in references if r.get("controller")), None)


def get_child_revision(child: Mapping[str, Any]) -> str:
    """What changes whenever someone changes what aliasop applies to `child`: for objects
    with a generation (Deployments), the generation and the labels, annotations and owners;
    otherwise (Services) the resourceVersion. A Deployment's status, which moves all through
    a rollout, is left out: re-applying at each of its changes would be load for nothing."""
    meta = child.get("metadata") or {}
    if "generation" not in meta:
        return str(meta.get("resourceVersion", ""))
    owned = [meta.get(key) for key in ("labels", "annotations", "ownerReferences")]
    digest = hashlib.sha256(json.dumps(owned, sort_keys=True).encode()).hexdigest()[:16]
    return f"{meta['generation']}/{digest}"
