"""A custom MLflow pyfunc model whose answers take as long as each request asks, for tests of
what a stopping server does with the requests in flight. Logged with `code_paths`, like
bike_fleet: see `aliasop_dev.bikes.log_slow_model`."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
from mlflow.pyfunc.model import PythonModel

# The request's param (MLflow's `params`, beside the input) holding its answer back.
DELAY_PARAM = "delay_seconds"


class SlowModel(PythonModel):
    """A scikit-learn regressor's rental estimates, answered after the request's
    `delay_seconds` (0 unless asked): the input stays the bike-rental features."""

    def __init__(self, regressor: Any) -> None:
        self.regressor = regressor

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> list[float]:
        time.sleep(float((params or {}).get(DELAY_PARAM, 0)))
        return [float(p) for p in self.regressor.predict(model_input)]
