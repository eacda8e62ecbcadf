"""A custom MLflow pyfunc model with code of its own, logged with `code_paths`.

This directory is copied into the model's artifacts (`code/bike_fleet/`) and imported from there
by whoever loads the model, as the top-level package `bike_fleet`: serving needs no install of
it. See `aliasop_dev.bikes.log_fleet_model`.
"""

from .model import FleetModel

__all__ = ["FleetModel"]
