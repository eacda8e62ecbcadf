"""The fleet's business rules, applied to a regressor's raw rental estimates."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def bikes_to_stock(estimates: npt.ArrayLike, fleet_size: int, reserve: float) -> list[int]:
    """Whole bikes to have at the stations: the estimate plus a safety `reserve` (a fraction),
    rounded up, never negative, never more than the fleet has."""
    wanted = np.ceil(np.asarray(estimates, dtype=float) * (1 + reserve))
    return [int(n) for n in np.clip(wanted, 0, fleet_size)]
