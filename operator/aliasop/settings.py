"""The operator's configuration: one object, read once from `ALIASOP_*` environment variables.

Command-line options of `aliasop run` override these: `cli` passes them to `load_settings`.
"""

from __future__ import annotations

import base64
from enum import StrEnum
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aliasop import __version__
from aliasop.analysis import split_host_entry
from aliasop.sharding import selector_keys

REGISTRY_MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # MLflow's answers aliasop reads are a few KiB


class MlflowIdentity(BaseSettings):
    """An MLflow identity: a bearer token, else a basic-auth user and password. Never
    logged."""

    token: SecretStr = Field(SecretStr(""), description="Bearer token.")
    username: str = Field("", description="Basic-auth user.")
    password: SecretStr = Field(SecretStr(""), description="Basic-auth password.")

    def headers(self) -> dict[str, str]:
        """The Authorization header MLflow clients send: the token, else basic auth."""
        if self.token.get_secret_value():
            return {"Authorization": f"Bearer {self.token.get_secret_value()}"}
        if self.username:
            pair = f"{self.username}:{self.password.get_secret_value()}".encode()
            return {"Authorization": f"Basic {base64.b64encode(pair).decode()}"}
        return {}


class RegistryAccess(MlflowIdentity):
    """How the operator reads MLflow: MLflow's own `MLFLOW_TRACKING_*` variables, as every
    MLflow client reads them (TOKEN, USERNAME, PASSWORD, SERVER_CERT_PATH, CLIENT_CERT_PATH,
    INSECURE_TLS; the shipped Deployment takes them from the optional Secret
    `aliasop-mlflow`)."""

    model_config = SettingsConfigDict(env_prefix="MLFLOW_TRACKING_", frozen=True)

    server_cert_path: str = Field(
        "", description="CA bundle to verify MLflow's certificate with, instead of the system's."
    )
    client_cert_path: str = Field("", description="Client certificate (and key) for mutual TLS.")
    insecure_tls: bool = Field(False, description="Do not verify MLflow's certificate.")

    @model_validator(mode="after")
    def _one_way_to_verify(self) -> RegistryAccess:
        if self.insecure_tls and self.server_cert_path:
            raise ValueError(
                "MLFLOW_TRACKING_INSECURE_TLS and MLFLOW_TRACKING_SERVER_CERT_PATH exclude "
                "each other"
            )
        return self


class RegistryWriter(MlflowIdentity):
    """The MLflow identity the operator writes to the registry with (model-version tags, and
    aliases for onFailure: RevertAlias): separate from the reading one, as writing needs EDIT
    on the model. From `ALIASOP_REGISTRY_WRITER_*` (TOKEN, USERNAME, PASSWORD; the optional
    Secret `aliasop-mlflow-writer` in the shipped Deployment); empty: no credentials."""

    model_config = SettingsConfigDict(env_prefix="ALIASOP_REGISTRY_WRITER_", frozen=True)


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ALIASOP_", frozen=True)

    tracking_uri: str = Field(
        "http://mlflow.mlflow:5000",
        description="MLflow tracking server used when a ModelDeployment names none.",
    )
    mlflow_ui_url: str = Field(
        "",
        description="Where people open MLflow's UI, for the link in status.servingVersionUrl "
        "of resources that name no trackingUri; empty: the tracking URI.",
    )
    log_format: LogFormat = Field(
        LogFormat.TEXT, description="`text` (one line per record) or `json` (one object per line)."
    )
    log_level: LogLevel = Field(LogLevel.INFO, description="Least severe records logged.")
    serving_image: str = Field(
        f"aliasop-serving:{__version__}",
        description="Image of serving pods when a ModelDeployment names none (default: the "
        "serving image of the operator's own version).",
    )
    registry_access: RegistryAccess = Field(
        default_factory=RegistryAccess,
        description="Credentials and TLS of MLflow requests, from MLFLOW_TRACKING_* variables.",
    )
    registry_write_back: bool = Field(
        False,
        description="Tell the registry what serves: tag each model version with where it "
        "serves, was rolled back or held back (aliasop/<namespace>/<name>).",
    )
    registry_writer: RegistryWriter = Field(
        default_factory=RegistryWriter,
        description="Credentials of registry writes, from ALIASOP_REGISTRY_WRITER_*.",
    )
    # --- What tenants may have the operator do on their behalf (docs/security.md) ---
    registry_write_grants: dict[str, list[str]] = Field(
        default_factory=dict,
        description="With registry write-back: which namespaces' ModelDeployments may have the "
        "operator write to which registered models (version tags, alias reverts), as JSON: "
        'namespace -> model names, each a name or a glob pattern, e.g. {"fraud": ["fraud-*"], '
        '"*": ["sandbox-*"]}. A namespace without a grant for its model writes nothing.',
    )
    analysis_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts canary analysis (prometheus and web metrics) may send requests to, "
        "as JSON: host names or glob patterns, with :port to allow one port only, e.g. "
        '["prometheus.monitoring:9090", "*.metrics.svc.cluster.local"]. Others are refused '
        "without a request. Empty: analysis reaches no host.",
    )

    # --- Bounds of registry exchanges (a ModelDeployment may name any server) -------------
    registry_credential_origins: str = Field(
        "",
        description="Comma-separated tracking URIs (scheme://host:port, and a path if any) "
        "whose URLs, and only those under them, get the MLFLOW_TRACKING_* credentials; empty: "
        "the tracking URI. A ModelDeployment naming another server, or another path on the "
        "same host, must not receive them.",
    )
    registry_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="Deadline of one MLflow exchange: connecting, sending, and reading the "
        "whole answer.",
    )
    registry_concurrency: int = Field(
        16,
        ge=1,
        description="MLflow requests in flight at once to each of the operator's own "
        "tracking URIs (ALIASOP_TRACKING_URI, ALIASOP_REGISTRY_CREDENTIAL_ORIGINS); as many "
        "again are shared by all the other servers ModelDeployments name.",
    )
    registry_origin_concurrency: int = Field(
        4,
        ge=1,
        description="Of the shared MLflow requests, at most this many to any one server "
        "(scheme://host:port), so that one slow server cannot hold them all.",
    )
    registry_slot_wait_seconds: float = Field(
        5.0,
        gt=0,
        description="How long an MLflow request waits for one of those slots before the "
        "registry is reported unavailable.",
    )
    registry_max_response_bytes: int = Field(
        REGISTRY_MAX_RESPONSE_BYTES,
        ge=1024,
        description="Longest MLflow answer read; a longer one is refused as it streams in.",
    )
    # ---------------------------------------------------------------------------------------
    api_concurrency: int = Field(
        32,
        ge=1,
        description="Resource passes, and Kubernetes API calls for children, in flight at "
        "once; status writes and Events get a quarter as many of their own.",
    )
    api_timeout_seconds: float = Field(
        30.0, gt=0, description="Timeout of one Kubernetes API call (children and status)."
    )
    retry_backoff_max_seconds: float = Field(
        300.0, gt=0, description="Longest wait between retries after errors."
    )
    status_refresh_seconds: float = Field(
        300,
        ge=0,
        description="A steady resource's status is rewritten at least this often, to move "
        "lastResolvedTime on; any other change is written at once. 0 writes every pass.",
    )
    memory_trim_seconds: float = Field(
        30,
        ge=0,
        description="How often memory freed after a burst is handed back to the operating "
        "system (glibc's malloc_trim); 0 never.",
    )
    http_port: int = Field(
        9090, ge=0, le=65535, description="Port of /metrics and /webhooks/mlflow; 0 disables."
    )
    notification_receivers_file: str = Field(
        "",
        description="File listing the webhook receivers of rollout notifications (YAML: "
        "`receivers: [{name, url, signingKey, format: json|slack, events: []}]`, mounted from "
        "the chart's Secret); empty: none.",
    )
    webhook_secret: SecretStr = Field(
        SecretStr(""), description="Shared secret of MLflow webhooks; empty disables them."
    )
    webhook_tolerance_seconds: float = Field(
        300, gt=0, description="Webhook timestamps further than this from now are refused."
    )

    watch_label_selector: str = Field(
        "",
        description="Follow only the ModelDeployments this label selector picks (Kubernetes "
        "syntax, e.g. `aliasop.io/shard=a`): one operator Deployment per shard. Their children "
        "carry the labels it names, so the API server filters both watches.",
    )
    leader_elect: bool = Field(
        False,
        description="Run as one of several replicas: only the holder of a coordination.k8s.io "
        "Lease writes, the others watch and stand by.",
    )
    leader_elect_namespace: str = Field(
        "",
        description="Namespace of the Lease; empty: the pod's own (its ServiceAccount's), "
        "else `default`.",
    )
    leader_elect_lease_name: str = Field(
        "",
        description="Name of the Lease; empty: `aliasop`, or with a watch label selector "
        "`aliasop-<hash of it>`, so that each shard has its own.",
    )
    leader_elect_identity: str = Field(
        "", description="This replica's name in the Lease; empty: the host name and a suffix."
    )
    leader_elect_lease_duration_seconds: float = Field(
        15.0, gt=0, description="How long a standby waits after the last renewal it saw."
    )
    leader_elect_renew_deadline_seconds: float = Field(
        10.0,
        gt=0,
        description="A leader that has not renewed for this long stops (the process exits).",
    )
    leader_elect_retry_period_seconds: float = Field(
        2.0, gt=0, description="How often the Lease is renewed, or tried for by a standby."
    )
    advertise_address: str = Field(
        "",
        description="Where the other replicas reach this one's HTTP port (the pod IP): a "
        "standby forwards the webhook deliveries it gets to the leader there.",
    )

    @field_validator("watch_label_selector")
    @classmethod
    def _a_label_selector(cls, selector: str) -> str:
        selector_keys(selector)  # raises ValueError with the requirement it cannot read
        return selector

    @field_validator("analysis_allowed_hosts")
    @classmethod
    def _host_entries(cls, hosts: list[str]) -> list[str]:
        for entry in hosts:
            split_host_entry(entry)  # raises ValueError saying what is wrong with it
        return hosts

    @model_validator(mode="after")
    def _lease_timings_in_order(self) -> Settings:
        # As client-go requires: a leader stops before a standby may take over.
        if not (
            self.leader_elect_lease_duration_seconds
            > self.leader_elect_renew_deadline_seconds
            > self.leader_elect_retry_period_seconds
        ):
            raise ValueError("leader election needs lease duration > renew deadline > retry period")
        return self

    @property
    def credential_origins(self) -> list[str]:
        """The tracking URIs that get credentials: URLs under them do."""
        listed = [o.strip() for o in self.registry_credential_origins.split(",") if o.strip()]
        return listed or [self.tracking_uri]

    @property
    def report_concurrency(self) -> int:
        """Status writes, and Event posts, in flight at once: reporting a rollout gets a
        smaller share of the API server than making it."""
        return max(1, self.api_concurrency // 4)


def load_settings(**overrides: Any) -> Settings:
    """The environment's settings, with `overrides` (command-line options) taking precedence."""
    return Settings(**overrides)
