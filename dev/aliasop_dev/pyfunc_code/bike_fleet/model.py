"""FleetModel: a scikit-learn regressor's estimates turned into bikes to stock."""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.pyfunc.model import PythonModel

from .rules import bikes_to_stock


class FleetModel(PythonModel):
    """Predicts whole bikes to stock from the bike-rental features; the regressor is pickled
    with the model, the rules come from this package."""

    def __init__(self, regressor: Any, fleet_size: int, reserve: float = 0.1) -> None:
        self.regressor = regressor
        self.fleet_size = fleet_size
        self.reserve = reserve

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> list[int]:
        return bikes_to_stock(self.regressor.predict(model_input), self.fleet_size, self.reserve)
