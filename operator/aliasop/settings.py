"""The operator's configuration: one object, read once from `ALIASOP_*` environment variables.

Command-line options of `aliasop run` override these: `cli` passes them to `load_settings`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from aliasop import __version__


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ALIASOP_", frozen=True)

    tracking_uri: str = Field(
        "http://mlflow.mlflow:5000",
        description="MLflow tracking server used when a ModelDeployment names none.",
    )
    serving_image: str = Field(
        f"aliasop-serving:{__version__}",
        description="Image of serving pods when a ModelDeployment names none (default: the "
        "serving image of the operator's own version).",
    )
    registry_timeout_seconds: float = Field(
        5.0, gt=0, description="Timeout of one MLflow request (connect and read)."
    )
    registry_concurrency: int = Field(
        16, ge=1, description="MLflow requests in flight at once, across all resources."
    )
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
    webhook_secret: SecretStr = Field(
        SecretStr(""), description="Shared secret of MLflow webhooks; empty disables them."
    )
    webhook_tolerance_seconds: float = Field(
        300, gt=0, description="Webhook timestamps further than this from now are refused."
    )

    @property
    def report_concurrency(self) -> int:
        """Status writes, and Event posts, in flight at once: reporting a rollout gets a
        smaller share of the API server than making it."""
        return max(1, self.api_concurrency // 4)


def load_settings(**overrides: Any) -> Settings:
    """The environment's settings, with `overrides` (command-line options) taking precedence."""
    return Settings(**overrides)
