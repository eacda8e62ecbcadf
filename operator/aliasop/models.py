"""Typed spec and status of a ModelDeployment: the single source of truth for the CRD.

Everything here is plain data. The CRD's OpenAPI schema is generated from these models by
`aliasop.crd`, so a constraint written here is enforced by the API server at apply time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, StringConstraints, field_validator, model_validator

from aliasop.analysis_models import AnalysisRun, AnalysisStep
from aliasop.modelbase import CamelModel, Timestamp

GROUP = "aliasop.io"
VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ["mdep"]
CATEGORY = "aliasop"  # `kubectl get aliasop`
TAG_PREFIX = "aliasop/"  # model-version tags aliasop writes: aliasop/<namespace>/<name>
# Set to a canary's version, ends that canary's pauses without `seconds` (a manual promotion).
PROMOTE_ANNOTATION = f"{GROUP}/promote"
# Requests a person makes of one version's rollout (the kubectl plugin writes them), each naming
# the version it is about, so that a request meant for another rollout does nothing:
# set to a canary's version, skips every step left: the stable side moves to it at once;
PROMOTE_FULL_ANNOTATION = f"{GROUP}/promote-full"
# set to the version a canary or rolling update rolls out, stops it and returns to the last
# good version, the alias left alone: the resource stays Aborted until the alias moves again
# or a retry names the version;
ABORT_ANNOTATION = f"{GROUP}/abort"
# set to a version that failed or was aborted (while the alias still points at it), rolls it
# out again, once.
RETRY_ANNOTATION = f"{GROUP}/retry"
REQUEST_ANNOTATIONS = (
    PROMOTE_ANNOTATION,
    PROMOTE_FULL_ANNOTATION,
    ABORT_ANNOTATION,
    RETRY_ANNOTATION,
)

# MLflow registered-model names may contain dots (catalog.schema.model) and dashes; aliases are
# word characters and dashes. Slashes, spaces and "@" are refused so a URI parses one way only.
MODEL_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,255}"
ALIAS_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,255}"
MODEL_URI_PATTERN = rf"^models:/({MODEL_NAME_PATTERN})@({ALIAS_PATTERN})$"
# http(s)://host[:port][/path]: no user or password, query or fragment. The host is a name,
# an IPv4 address or a bracketed IPv6 one.
TRACKING_URI_PATTERN = (
    r"^(https?://([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    r"(:[0-9]{1,5})?(/[^?#\s]*)?)?$"
)
TRACKING_URI_MESSAGE = (
    "spec.trackingUri must be http(s)://host[:port][/path], without user or password "
    "(MLflow credentials belong in the operator's Secret aliasop-mlflow), query (?...) or "
    "fragment (#...)"
)
_MODEL_URI = re.compile(MODEL_URI_PATTERN)


@dataclass(frozen=True)
class ModelUri:
    """A parsed `models:/<name>@<alias>`."""

    name: str
    alias: str

    @classmethod
    def parse(cls, uri: str) -> ModelUri:
        match = _MODEL_URI.fullmatch(uri)
        if match is None:
            raise ValueError(f"{uri!r} is not of the form models:/<name>@<alias>")
        return cls(name=match.group(1), alias=match.group(2))

    def pinned(self, version: str) -> str:
        """The immutable URI of one version, which is what serving pods load."""
        return f"models:/{self.name}/{version}"

    def __str__(self) -> str:
        return f"models:/{self.name}@{self.alias}"


# Kubernetes' resource.Quantity, as the API server's own OpenAPI schema spells it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
Quantity = int | Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)]


class Resources(CamelModel):
    """core/v1 ResourceRequirements (limits and requests)."""

    limits: dict[str, Quantity] = Field(
        default_factory=dict, description="Most of each resource the container may use."
    )
    requests: dict[str, Quantity] = Field(
        default_factory=dict, description="Resources the scheduler reserves for the container."
    )


class EnvVar(CamelModel):
    """core/v1 EnvVar; `valueFrom` is passed through as Kubernetes defines it."""

    name: str = Field(min_length=1, max_length=256, description="Name of the variable.")
    value: str | None = Field(None, description="Its value.")
    value_from: dict[str, Any] | None = Field(
        None, description="core/v1 EnvVarSource: a Secret or ConfigMap key, a field, a resource."
    )


# Labels of the serving pods that aliasop sets: those of the Deployment's selector, and every
# label and annotation under aliasop.io/. Pod labels and annotations of a spec may not set them.
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
SELECTOR_LABEL_KEYS = (NAME_LABEL, INSTANCE_LABEL, MANAGED_BY_LABEL)
RESERVED_PREFIX = f"{GROUP}/"

# A label value (and a nodeSelector's), as Kubernetes validates it.
LabelValue = Annotated[
    str,
    StringConstraints(max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"),
]
# A DNS-1123 subdomain: the name of a ServiceAccount or a PriorityClass.
DNS_SUBDOMAIN_PATTERN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$"

# Fields typed loosely here whose CRD schema is Kubernetes' own: the schema of the core/v1
# PodSpec field this names (aliasop.crd takes it from aliasop/schemas/core_v1.json).
POD_SPEC_SCHEMA = "x-aliasop-pod-spec-schema"


def _pod_spec_schema(field: str) -> dict[str, Any]:
    return {POD_SPEC_SCHEMA: field}


# A count, or a percentage of the replicas ("25%"), as a PodDisruptionBudget takes them.
IntOrPercent = int | Annotated[str, StringConstraints(pattern=r"^[0-9]+%$")]


class DisruptionBudget(CamelModel):
    """A PodDisruptionBudget (policy/v1) of the serving pods: what voluntary evictions, such
    as node drains and cluster upgrades, must leave serving. Exactly one of the two."""

    min_available: IntOrPercent | None = Field(
        None, description="Serving pods that must stay available: a count or a percentage."
    )
    max_unavailable: IntOrPercent | None = Field(
        None, description="Serving pods that may be evicted at once: a count or a percentage."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DisruptionBudget:
        if (self.min_available is None) == (self.max_unavailable is None):
            raise ValueError(DISRUPTION_BUDGET_MESSAGE)
        return self


DISRUPTION_BUDGET_MESSAGE = "set exactly one of minAvailable and maxUnavailable"


class StorageSpec(CamelModel):
    """Where each serving pod keeps the model it downloads."""

    size_limit: Quantity | None = Field(
        None,
        description="Size limit of the emptyDir the model is downloaded into (e.g. 2Gi), so "
        "that a model cannot fill the node's disk: the kubelet evicts a pod whose model "
        "outgrows it (the pod fails with reason Evicted; its Deployment makes a new one). "
        "Empty: no limit.",
    )


class ServingSpec(CamelModel):
    """The serving pods: image, port, scoring server and container settings."""

    image: str = Field("", description="Serving image; empty means the operator's default.")
    port: int = Field(8080, ge=1, le=65535, description="Container port serving HTTP.")
    workers: int = Field(1, ge=1, le=64, description="Scoring server worker processes.")
    resources: Resources = Field(
        default_factory=Resources,
        description="core/v1 ResourceRequirements of the serving container.",
    )
    env: list[EnvVar] = Field(
        default_factory=list, description="Extra core/v1 EnvVar entries for the serving container."
    )
    credentials_secret: str = Field(
        "",
        max_length=253,
        pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$",
        description="Secret whose keys become the download step's environment (envFrom), "
        "not the serving container's: MLflow's MLFLOW_TRACKING_* credentials, and the "
        "artifact store's (e.g. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and "
        "MLFLOW_S3_ENDPOINT_URL for s3://, AZURE_STORAGE_CONNECTION_STRING for wasbs://).",
    )
    storage: StorageSpec = Field(
        default_factory=StorageSpec, description="Where each pod keeps the downloaded model."
    )
    disruption_budget: DisruptionBudget | None = Field(
        None,
        description="A PodDisruptionBudget for the serving pods, named like the resource; "
        "none when unset.",
    )
    drain_seconds: int = Field(
        5,
        ge=0,
        le=300,
        description="Seconds a stopping pod goes on serving after Kubernetes takes it out of "
        "the Service, while the change reaches every node: requests routed to it meanwhile "
        "still get answers (a preStop sleep; none for 0). Then SIGTERM: the server stops "
        "accepting, finishes the requests in flight (for up to 60 seconds more, MLflow's "
        "request timeout) and exits.",
    )
    # Pod settings: placement, identity, image pulls, labels and annotations of serving pods.
    service_account_name: str = Field(
        "",
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="ServiceAccount the serving pods run as (cloud identity for artifact "
        "access, such as IRSA or Workload Identity); empty means the namespace's default. "
        "Its token is not mounted into the serving container.",
    )
    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=64,
        description="Node labels a node must carry to run serving pods (core/v1 "
        "PodSpec.nodeSelector).",
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Taints the serving pods tolerate (core/v1 Toleration).",
        json_schema_extra=_pod_spec_schema("tolerations"),
    )
    affinity: dict[str, Any] = Field(
        default_factory=dict,
        description="Node affinity, pod affinity and anti-affinity of the serving pods "
        "(core/v1 Affinity).",
        json_schema_extra=_pod_spec_schema("affinity"),
    )
    topology_spread_constraints: list[dict[str, Any]] = Field(
        default_factory=list,
        description="How serving pods spread across zones, nodes and other topology domains "
        "(core/v1 TopologySpreadConstraint).",
        json_schema_extra=_pod_spec_schema("topologySpreadConstraints"),
    )
    image_pull_secrets: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Secrets, in the namespace, to pull the serving image with (core/v1 "
        "LocalObjectReference).",
        json_schema_extra=_pod_spec_schema("imagePullSecrets"),
    )
    priority_class_name: str = Field(
        "",
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="PriorityClass of the serving pods; empty means the cluster's default.",
    )
    pod_labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=64,
        description="Extra labels of the serving pods. Not the keys of the Deployment's "
        "selector (app.kubernetes.io/name, app.kubernetes.io/instance, "
        "app.kubernetes.io/managed-by) nor any key under aliasop.io/.",
    )
    pod_annotations: dict[str, str] = Field(
        default_factory=dict,
        max_length=64,
        description="Extra annotations of the serving pods; not under aliasop.io/.",
    )


class SignaturePolicy(StrEnum):
    COMPATIBLE = "Compatible"  # a version whose inputs break what clients send is held back
    IGNORE = "Ignore"


class OnFailure(StrEnum):
    KEEP_ALIAS = "KeepAlias"  # the alias keeps pointing at the version that failed
    REVERT_ALIAS = "RevertAlias"  # an automatic rollback moves the alias back too


class RolloutStrategy(StrEnum):
    ROLLING_UPDATE = "RollingUpdate"  # every pod moves to the new version in one rolling update
    CANARY = "Canary"  # a canary Deployment takes a share of the pods first, step by step


class PauseStep(CamelModel):
    """Wait before the next step."""

    seconds: int | None = Field(
        None,
        ge=1,
        le=86400,
        description="Seconds to wait. Absent: wait until the canary's version is promoted by "
        f"hand (kubectl annotate mdep NAME {PROMOTE_ANNOTATION}=VERSION).",
    )


class CanaryStep(CamelModel):
    """One step of a canary: exactly one of setWeight, pause and analysis."""

    set_weight: int | None = Field(
        None,
        ge=0,
        le=100,
        description="Percent of spec.replicas that run the new version (rounded up): the "
        "canary Deployment scales up first, then the stable one down.",
    )
    pause: PauseStep | None = Field(None, description="Wait, for a time or for a promotion.")
    analysis: AnalysisStep | None = Field(
        None, description="Measure the canary; a failed analysis aborts the canary."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> CanaryStep:
        if [self.set_weight, self.pause, self.analysis].count(None) != 2:
            raise ValueError(CANARY_STEP_MESSAGE)
        return self


CANARY_STEP_MESSAGE = "a step sets exactly one of setWeight, pause and analysis"
MAX_CANARY_STEPS = 20  # the CEL rules of analysis steps are costed per step: bounded


class RolloutSpec(CamelModel):
    """How a new version rolls out, what it must pass first, and what happens when it fails."""

    strategy: RolloutStrategy = Field(
        RolloutStrategy.ROLLING_UPDATE,
        description="RollingUpdate: the Deployment rolls every pod to the new version. Canary: "
        "a <name>-canary Deployment runs the new version beside the stable one through "
        "`steps` (needs spec.replicas), then the stable one moves to it.",
    )
    steps: list[CanaryStep] = Field(
        default_factory=list,
        max_length=MAX_CANARY_STEPS,
        description="The canary's steps, in order (Canary only; at least one).",
    )

    progress_deadline_seconds: int = Field(
        600, ge=30, le=86400, description="Seconds a rollout may take before it counts as failed."
    )
    auto_rollback: bool = Field(
        True, description="Roll back to the last good version when a rollout fails."
    )
    signature_policy: SignaturePolicy = Field(
        SignaturePolicy.COMPATIBLE,
        description="Compatible: a version whose model signature drops or retypes an input "
        "the serving version takes, or requires a new one, does not roll out. Ignore: no check.",
    )
    on_failure: OnFailure = Field(
        OnFailure.KEEP_ALIAS,
        description="RevertAlias: an automatic rollback also moves the alias back to the "
        "version that serves, so the registry never claims a release that did not happen "
        "(needs the operator's registry writes, ALIASOP_REGISTRY_WRITE_BACK).",
    )
    required_tags: dict[str, Annotated[str, Field(max_length=5000)]] = Field(
        default_factory=dict,
        max_length=20,
        description="Model-version tags a version must carry to roll out, e.g. "
        "{validation_status: approved}; checked each poll and on MLflow's tag webhooks.",
    )


class ChallengerSpec(CamelModel):
    """A second alias of the same model served beside the main one, for as long as it is set."""

    alias: Annotated[str, Field(pattern=f"^{ALIAS_PATTERN}$")] = Field(
        description="Alias of the same registered model the challenger side follows."
    )
    weight: int = Field(
        ge=1,
        le=99,
        description="Percent of spec.replicas that run the challenger (rounded up); the main "
        "side runs the rest.",
    )


class ModelDeploymentSpec(CamelModel):
    """Which model alias to serve, and how."""

    model: Annotated[str, Field(pattern=MODEL_URI_PATTERN, max_length=600)] = Field(
        ..., description="Registered model and alias to follow: models:/<name>@<alias>."
    )
    tracking_uri: str = Field(
        "",
        max_length=2048,
        json_schema_extra={"pattern": TRACKING_URI_PATTERN},
        description="MLflow tracking server, http(s)://host[:port][/path] without user, "
        "password, query or fragment; empty means the operator's default.",
    )
    replicas: int | None = Field(
        None,
        ge=0,
        le=10000,
        description="Serving replicas; omit to leave replicas to another owner such as an HPA.",
    )
    poll_interval_seconds: int = Field(
        30, ge=5, le=86400, description="Seconds between registry checks."
    )
    paused: bool = Field(False, description="Report alias moves in status but do not roll out.")
    serving: ServingSpec = Field(
        default_factory=ServingSpec, description="The serving pods the operator runs."
    )
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec, description="How a version rolls out, and when it fails."
    )
    history_limit: int = Field(10, ge=1, le=100, description="Rollouts kept in status.history.")
    challenger: ChallengerSpec | None = Field(
        None,
        description="Champion-challenger: serve a second alias of the model beside the main "
        "one, in its own Deployment <name>-challenger, at `weight` percent of the replicas "
        "(needs spec.replicas; not with rollout.strategy Canary).",
    )

    @field_validator("tracking_uri")
    @classmethod
    def _a_plain_url(cls, uri: str) -> str:
        # The schema's pattern, with a message saying what it asks for (pydantic's would
        # quote the pattern).
        if re.fullmatch(TRACKING_URI_PATTERN, uri) is None:
            raise ValueError(TRACKING_URI_MESSAGE)
        return uri

    @model_validator(mode="after")
    def _sides_need(self) -> ModelDeploymentSpec:
        if self.rollout.strategy is RolloutStrategy.CANARY:
            if self.replicas is None:
                raise ValueError(CANARY_REPLICAS_MESSAGE)
            if not self.rollout.steps:
                raise ValueError(CANARY_STEPS_MESSAGE)
        if self.challenger is not None:
            if self.replicas is None:
                raise ValueError(CHALLENGER_REPLICAS_MESSAGE)
            if self.canary:
                raise ValueError(CHALLENGER_CANARY_MESSAGE)
        return self

    @property
    def model_uri(self) -> ModelUri:
        return ModelUri.parse(self.model)

    @property
    def canary(self) -> bool:
        return self.rollout.strategy is RolloutStrategy.CANARY

    @property
    def sides(self) -> bool:
        """Whether the pods are split into sides (canary or challenger), told apart by a label."""
        return self.canary or self.challenger is not None


CANARY_REPLICAS_MESSAGE = (
    "rollout.strategy Canary needs replicas: the canary's weight is a share of them"
)
CANARY_STEPS_MESSAGE = "rollout.strategy Canary needs at least one step"
CHALLENGER_REPLICAS_MESSAGE = "challenger needs replicas: its weight is a share of them"
CHALLENGER_CANARY_MESSAGE = "challenger and rollout.strategy Canary do not go together"


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    READY = "Ready"
    DEGRADED = "Degraded"
    PAUSED = "Paused"
    ABORTED = "Aborted"  # a person stopped the rollout (aliasop.io/abort): the last good serves


class Outcome(StrEnum):
    PROGRESSING = "Progressing"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUPERSEDED = "Superseded"
    ABORTED = "Aborted"  # stopped by aliasop.io/abort


class ConditionType(StrEnum):
    # kstatus (Flux health checks, kpt, `kubectl wait`): Reconciling while progress is being
    # made, Stalled when nothing changes until a person acts, Ready when the pinned version
    # serves as the spec asks.
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    REGISTRY_AVAILABLE = "RegistryAvailable"
    # Release gates: the alias's version passes them before it rolls out.
    SIGNATURE_COMPATIBLE = "SignatureCompatible"
    APPROVED = "Approved"
    # With ALIASOP_REGISTRY_WRITE_BACK: whether this namespace may write to the model
    # (ALIASOP_REGISTRY_WRITE_GRANTS).
    REGISTRY_WRITES_GRANTED = "RegistryWritesGranted"


class Reason(StrEnum):
    """Every reason aliasop gives: of Events, conditions and history entries."""

    # Why the registry gave no servable version (RegistryProblem.kind).
    REGISTRY_UNAVAILABLE = "RegistryUnavailable"
    REGISTRY_ACCESS_DENIED = "RegistryAccessDenied"
    MODEL_NOT_FOUND = "ModelNotFound"
    ALIAS_NOT_FOUND = "AliasNotFound"
    VERSION_NOT_FOUND = "VersionNotFound"
    VERSION_NOT_READY = "VersionNotReady"
    # Why a rollout started (history) and what became of it (Events).
    CREATED = "Created"
    ALIAS_MOVED = "AliasMoved"
    ROLLBACK = "Rollback"
    ADOPTED = "Adopted"
    RETRIED = "Retried"  # a failed or aborted version again, as aliasop.io/retry asked
    ROLLOUT_STARTED = "RolloutStarted"
    ROLLOUT_SUCCEEDED = "RolloutSucceeded"
    ROLLOUT_FAILED = "RolloutFailed"
    ROLLOUT_ABORTED = "RolloutAborted"  # as aliasop.io/abort asked
    # A canary's course (Events).
    CANARY_STEP = "CanaryStep"
    CANARY_PROMOTED = "CanaryPromoted"
    CANARY_ABORTED = "CanaryAborted"
    CANARY_RESTARTED = "CanaryRestarted"
    CHALLENGER_MOVED = "ChallengerMoved"  # the challenger's alias moved: its side follows
    # What else can go wrong.
    REGISTRY_AVAILABLE = "RegistryAvailable"
    INVALID_SPEC = "InvalidSpec"
    SIGNATURE_INCOMPATIBLE = "SignatureIncompatible"
    ALIAS_NOT_REVERTED = "AliasNotReverted"
    ALIAS_REVERTED = "AliasReverted"
    WRITES_NOT_GRANTED = "WritesNotGranted"  # no write grant for this namespace and model
    WRITES_GRANTED = "WritesGranted"
    WAITING_FOR_APPROVAL = "WaitingForApproval"
    DEPLOYMENT_REFUSED = "DeploymentRefused"
    NAME_CLASH = "NameClash"  # a child's name is taken by an object aliasop does not own here
    KUBERNETES_API_ERROR = "KubernetesApiError"
    # Conditions that are as they should be, or on their way.
    REACHABLE = "Reachable"
    AS_EXPECTED = "AsExpected"
    ROLLING_OUT = "RollingOut"
    RESOLVING = "Resolving"
    SERVING = "Serving"
    PAUSED = "Paused"
    IDLE = "Idle"
    COMPATIBLE = "Compatible"
    NOT_COMPARED = "NotCompared"
    APPROVED = "Approved"


class Condition(CamelModel):
    """metav1.Condition."""

    type: str = Field(description=f"One of {', '.join(ConditionType)}.")
    status: str = Field(pattern=r"^(True|False|Unknown)$", description="True, False or Unknown.")
    reason: str = Field(description="Why, in one CamelCase word.")
    message: str = Field("", description="Why, for people.")
    last_transition_time: Timestamp | None = Field(
        None, description="When the status last changed."
    )
    observed_generation: int | None = Field(
        None, description="The resource's generation the condition was set for."
    )

    @property
    def is_true(self) -> bool:
        return self.status == "True"


class HistoryEntry(CamelModel):
    """One rollout."""

    version: str = Field(description="Model version rolled out.")
    run_id: str = Field("", description="MLflow run that produced the version.")
    reason: Reason = Field(
        description="Why it started: Created, AliasMoved, Rollback, Adopted, Retried."
    )
    started_at: Timestamp = Field(description="When the rollout started.")
    finished_at: Timestamp | None = Field(None, description="When it ended, if it has.")
    outcome: Outcome = Field(description="Progressing, Succeeded, Failed, Superseded or Aborted.")
    message: str = Field("", description="Why it failed, when it did.")


class CanaryPhase(StrEnum):
    PROGRESSING = "Progressing"  # scaling to the step's weight
    PAUSED = "Paused"  # waiting, for a time or for a promotion
    ANALYSING = "Analysing"  # measuring the canary
    PROMOTING = "Promoting"  # every step passed: the stable Deployment moves to the version


class CanaryStatus(CamelModel):
    """Where the canary in flight stands: all a restarted operator needs to resume it at the
    same step, without restarting a pause or repeating a measurement."""

    version: str = Field(description="Model version the canary runs.")
    run_id: str = Field("", description="MLflow run that produced it.")
    stable_version: str = Field(description="Version the stable Deployment serves meanwhile.")
    step: int = Field(
        description="The step under way, from 1; one more than the steps once promoting."
    )
    steps: int = Field(description="Steps in all.")
    weight: int = Field(0, description="Percent of spec.replicas the canary runs now.")
    phase: CanaryPhase = Field(description="Progressing, Paused, Analysing or Promoting.")
    step_started_at: Timestamp = Field(description="When the step under way started.")
    pause_until: Timestamp | None = Field(
        None, description="When the pause under way ends; none while it waits for a promotion."
    )
    analysis: AnalysisRun | None = Field(
        None, description="The analysis under way (or just decided): each measurement kept."
    )


class ChallengerStatus(CamelModel):
    """The challenger side: its alias, and the version it serves."""

    alias: str = Field(description="The alias it follows.")
    alias_version: str | None = Field(None, description="Where that alias last pointed.")
    serving_version: str | None = Field(
        None, description="Version whose challenger pods are all available."
    )
    weight: int = Field(description="Percent of spec.replicas it runs.")
    message: str = Field("", description="What is happening on this side, for people.")


class ModelDeploymentStatus(CamelModel):
    """What the operator last saw and did."""

    observed_generation: int | None = Field(
        None, description="The generation of the spec the operator last acted on."
    )
    alias_version: str | None = Field(
        None, description="Where the alias pointed when last resolved."
    )
    target_version: str | None = Field(None, description="Version the Deployment is rolling to.")
    serving_version: str | None = Field(None, description="Version whose pods are all available.")
    last_good_version: str | None = Field(
        None, description="Last version that rolled out completely: where rollbacks go."
    )
    failed_version: str | None = Field(
        None,
        description="Version rolled back after a failed rollout, or aborted (aliasop.io/abort); "
        "not rolled out again until the alias moves away and back, or aliasop.io/retry names it.",
    )
    held_version: str | None = Field(
        None, description="Version the alias points at that a release gate holds back."
    )
    serving_version_url: str | None = Field(
        None,
        description="The MLflow UI page of the serving version, for people "
        "(ALIASOP_MLFLOW_UI_URL, else the tracking URI).",
    )
    replicas: int | None = Field(
        None, description="Serving pods (all versions) as the Deployment counts them."
    )
    selector: str | None = Field(
        None, description="Label selector of the serving pods, for the scale subresource."
    )
    phase: Phase = Field(
        Phase.PENDING, description="Pending, Progressing, Ready, Degraded, Paused or Aborted."
    )
    message: str = Field("", description="What is happening, for people.")
    last_resolved_time: Timestamp | None = Field(
        None, description="When the alias was last resolved."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready: the pinned version serves as the spec asks (also while paused, or "
        "while the registry is unreachable). Reconciling: progress is being made. Stalled: "
        "nothing changes until a person acts (kstatus reads these three). Progressing: a "
        "rollout is under way. Degraded: something is wrong; the reason says what. "
        "RegistryAvailable: MLflow answered the last resolution. SignatureCompatible: the "
        "version the alias points at takes what clients send the serving one "
        "(rollout.signaturePolicy). Approved: it carries rollout.requiredTags (present only "
        "with requiredTags).",
    )
    canary: CanaryStatus | None = Field(None, description="The canary in flight, if any.")
    challenger: ChallengerStatus | None = Field(
        None, description="The challenger side, with spec.challenger."
    )
    history: list[HistoryEntry] = Field(default_factory=list, description="Rollouts, newest first.")

    def condition(self, type_: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


class ModelDeployment(CamelModel):
    """The whole resource, as the CRD describes it."""

    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None


@dataclass(frozen=True)
class ResolvedVersion:
    """An alias resolved to a READY model version."""

    version: str
    run_id: str


@dataclass(frozen=True)
class RegistryProblem(Exception):
    """The registry could not give a servable version; `message` is shown to the user."""

    kind: Reason  # one of the registry's: REGISTRY_UNAVAILABLE ... VERSION_NOT_READY
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"
