"""A small, real model for the demo and the tests: hourly bike rentals.

The data set is generated deterministically (no downloads): hour, weekday, season,
temperature, humidity, wind and weather -> rentals. Each version is a scikit-learn
regressor logged to MLflow with a signature and an input example, then registered.
Needs the `serving` extra (mlflow, scikit-learn).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Custom pyfunc models' own code (packages bike_fleet, slow_bikes), logged with them
# (`code_paths`).
FLEET_CODE = Path(__file__).parent / "pyfunc_code" / "bike_fleet"
SLOW_CODE = Path(__file__).parent / "pyfunc_code" / "slow_bikes"

FEATURES = ["hour", "weekday", "season", "temperature", "humidity", "wind", "weather"]


def bike_rentals(rows: int = 2000, seed: int = 7) -> tuple[pd.DataFrame, pd.Series]:
    """A bike-sharing data set with the commute peaks and weather effects of the real thing."""
    rng = np.random.default_rng(seed)
    hour = rng.integers(0, 24, rows)
    weekday = rng.integers(0, 7, rows)
    season = rng.integers(1, 5, rows)
    temperature = np.round(rng.normal(8 + 6 * season, 5, rows), 1)
    humidity = np.round(rng.uniform(0.2, 1.0, rows), 2)
    wind = np.round(rng.gamma(2.0, 6.0, rows), 1)
    weather = rng.choice([1, 2, 3], rows, p=[0.65, 0.27, 0.08])
    workday = weekday < 5
    commute = np.exp(-((hour - 8) ** 2) / 2) + np.exp(-((hour - 17.5) ** 2) / 3)
    leisure = np.exp(-((hour - 14) ** 2) / 12)
    count = (
        40
        + np.where(workday, 420 * commute + 60 * leisure, 260 * leisure + 40 * commute)
        + 9 * np.clip(temperature, -5, 32)
        - 120 * humidity
        - 3 * wind
        - 70 * (weather - 1)
        + rng.normal(0, 25, rows)
    )
    frame = pd.DataFrame(
        {
            "hour": hour,
            "weekday": weekday,
            "season": season,
            "temperature": temperature.astype(float),
            "humidity": humidity.astype(float),
            "wind": wind.astype(float),
            "weather": weather,
        }
    )
    return frame, pd.Series(np.clip(count, 0, None).round(), name="count")


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str
    input_example: pd.DataFrame
    predictions: list[float]


@dataclass(frozen=True)
class LoggedModel:
    """A model logged in a run of an MLflow server, which any number of registered models can
    take as a version (`register`): the tests log each kind once and register it often."""

    model_uri: str
    run_id: str
    input_example: pd.DataFrame
    predictions: list[float]


def train_and_register(
    tracking_uri: str,
    name: str,
    kind: str = "linear",
    seed: int = 7,
    drop: Sequence[str] = (),
    optional: Sequence[str] = (),
) -> RegisteredVersion:
    """Train one regressor, log it to MLflow and register a version (see `train_and_log`)."""
    return register(
        tracking_uri, name, train_and_log(tracking_uri, kind, seed, drop, optional, name)
    )


def train_and_log(
    tracking_uri: str,
    kind: str = "linear",
    seed: int = 7,
    drop: Sequence[str] = (),
    optional: Sequence[str] = (),
    experiment: str = "bikes",
) -> LoggedModel:
    """Train one regressor and log it to MLflow, in a run of experiment `aliasop-<experiment>`.

    `linear` is a plain ridge regression; `hourly` one-hot encodes the calendar first, so it
    learns the commute peaks and predicts differently. (Tree models are avoided: MLflow's
    skops serialisation refuses to load them unless their types are explicitly trusted.)
    `drop` leaves features out of the model and its signature; `optional` adds inputs to the
    signature that clients may send or not (the model does not use them).
    """
    import mlflow
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import ColSpec, Schema
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    features, target = bike_rentals(seed=seed)
    features = features.drop(columns=list(drop))
    calendar = [c for c in ("hour", "weekday", "season", "weather") if c in features]
    model: Any = (
        make_pipeline(
            ColumnTransformer(
                [("calendar", OneHotEncoder(handle_unknown="ignore"), calendar)],
                remainder="passthrough",
            ),
            Ridge(alpha=1.0),
        )
        if kind == "hourly"
        else Ridge(alpha=1.0)
    )
    model.fit(features, target)
    example = features.head(5)
    predictions = [float(p) for p in model.predict(example)]
    signature = infer_signature(features, model.predict(features))
    if optional:
        assert signature.inputs is not None
        extra = [ColSpec("double", column, required=False) for column in optional]
        signature = ModelSignature(Schema([*signature.inputs.inputs, *extra]), signature.outputs)
    return _log(
        tracking_uri,
        experiment,
        example,
        predictions,
        lambda: mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
        ),
        params={"kind": kind, "seed": seed},
    )


def pip_requirements() -> list[str]:
    """What the models need, pinned to the versions here (the serving image's): given
    explicitly, because MLflow infers them otherwise by loading the model in a subprocess
    that imports MLflow and scikit-learn afresh (seconds per model)."""
    from importlib.metadata import PackageNotFoundError, version

    needed = []
    for package in ("mlflow", "scikit-learn", "numpy", "pandas", "scipy", "skops", "cloudpickle"):
        try:
            needed.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return needed


def log_fleet_model(
    tracking_uri: str, name: str, fleet_size: int = 300, seed: int = 7
) -> RegisteredVersion:
    """Log and register a custom pyfunc model with code of its own: `bike_fleet.FleetModel`,
    a ridge regression whose estimates its package's rules turn into whole bikes to stock.

    The package goes into the model's artifacts (`code_paths`), and the model is pickled as a
    reference to `bike_fleet.model.FleetModel`: whoever loads it imports that package from
    the artifacts, never from an installed copy. (`bike_fleet` is importable here only because
    this function puts its parent directory on sys.path.)
    """
    from sklearn.linear_model import Ridge

    fleet = _code_package(FLEET_CODE)
    features, target = bike_rentals(seed=seed)
    model = fleet.FleetModel(Ridge(alpha=1.0).fit(features, target), fleet_size=fleet_size)
    return _log_pyfunc(tracking_uri, name, FLEET_CODE, model, features, seed)


def log_slow_model(tracking_uri: str, name: str, seed: int = 7) -> RegisteredVersion:
    """Log and register a custom pyfunc model that answers as slowly as a request asks:
    `slow_bikes.SlowModel`, the ridge regression of `train_and_register` (kind linear, same
    data and input example), whose answer waits for the request's `delay_seconds` param
    (`{"dataframe_split": ..., "params": {"delay_seconds": 8}}`). Logged with its package in
    `code_paths`, as `log_fleet_model`."""
    from sklearn.linear_model import Ridge

    slow = _code_package(SLOW_CODE)
    features, target = bike_rentals(seed=seed)
    model = slow.SlowModel(Ridge(alpha=1.0).fit(features, target))
    params = {slow.DELAY_PARAM: 0.0}
    return _log_pyfunc(tracking_uri, name, SLOW_CODE, model, features, seed, params)


def _log_pyfunc(
    tracking_uri: str,
    name: str,
    code: Path,
    model: Any,
    features: pd.DataFrame,
    seed: int,
    signature_params: dict[str, Any] | None = None,
) -> RegisteredVersion:
    """Log `model` (a PythonModel of the package at `code`) with that package in its
    artifacts, and register it."""
    import mlflow
    from mlflow.models import infer_signature

    example = features.head(5)
    predictions = [float(p) for p in model.predict(None, example)]
    logged = _log(
        tracking_uri,
        name,
        example,
        predictions,
        lambda: mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            code_paths=[str(code)],
            signature=infer_signature(features, predictions, params=signature_params),
            input_example=example,
            pip_requirements=pip_requirements(),
        ),
        params={"seed": seed},
    )
    return register(tracking_uri, name, logged)


def _code_package(path: Path) -> Any:
    """The package at `path` (a model's own code), imported from its parent directory."""
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    return importlib.import_module(path.name)


def _log(
    tracking_uri: str,
    experiment: str,
    example: pd.DataFrame,
    predictions: list[float],
    log_model: Callable[[], Any],
    params: dict[str, Any] | None = None,
) -> LoggedModel:
    """Run `log_model` (which logs the model) in a new run of experiment
    `aliasop-<experiment>`."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(f"aliasop-{experiment}")
    with mlflow.start_run() as run:
        if params:
            mlflow.log_params(params)
        info = log_model()
    return LoggedModel(
        model_uri=info.model_uri,
        run_id=run.info.run_id,
        input_example=example,
        predictions=predictions,
    )


def register(tracking_uri: str, name: str, logged: LoggedModel) -> RegisteredVersion:
    """A new version of registered model `name` (created if missing): the model `logged`."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        name, source=logged.model_uri, run_id=logged.run_id, model_id=_model_id(logged)
    )
    return RegisteredVersion(
        name=name,
        version=str(version.version),
        run_id=logged.run_id,
        input_example=logged.input_example,
        predictions=logged.predictions,
    )


def _model_id(logged: LoggedModel) -> str:
    """The logged model's ID, from its URI `models:/<id>`."""
    return logged.model_uri.removeprefix("models:/")


def set_alias(tracking_uri: str, name: str, alias: str, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=tracking_uri).set_registered_model_alias(name, alias, version)
