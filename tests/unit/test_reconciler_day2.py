"""What a pass adds for day 2, on the reconciler's fakes (test_reconciler.World): the
resource's series after each pass, gone with the resource; a rollout timed once when it ends;
the serving version's MLflow link in status."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from test_reconciler import KEY, TRACKING_URI, World

pytestmark = pytest.mark.timeout(10)


def series() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The registry's samples labelled with KEY's resource."""
    found = {}
    for family in REGISTRY.collect():
        for s in family.samples:
            if (s.labels.get("namespace"), s.labels.get("name")) == KEY:
                rest = ((k, v) for k, v in s.labels.items() if k not in ("namespace", "name"))
                found[s.name, tuple(sorted(rest))] = s.value
    return found


def rollouts_timed() -> float:
    value = REGISTRY.get_sample_value(
        "aliasop_rollout_duration_seconds_sum", {"outcome": "Succeeded"}
    )
    return value or 0.0


async def test_series_follow_passes_and_go_with_the_resource() -> None:
    world = World()
    world.seen()
    await world.reconciler.run_pass(KEY)
    now = series()
    info = (("alias", "champion"), ("model", "bikes"), ("phase", "Progressing"))
    assert now[("aliasop_resource_info", info)] == 1
    assert now[("aliasop_resource_version", (("side", "target"),))] == 1
    assert ("aliasop_resource_version", (("side", "serving"),)) not in now
    assert world.status().serving_version_url is None

    timed = rollouts_timed()
    world.rolled_out("1")
    world.clock.at += timedelta(seconds=30)
    await world.reconciler.run_pass(KEY)
    now = series()
    assert now[("aliasop_resource_info", (*info[:2], ("phase", "Ready")))] == 1
    assert ("aliasop_resource_info", info) not in now
    assert now[("aliasop_resource_version", (("side", "serving"),))] == 1
    assert now[("aliasop_resource_condition", (("type", "Ready"),))] == 1
    assert rollouts_timed() == timed + 30
    assert world.status().serving_version_url == f"{TRACKING_URI}/#/models/bikes/versions/1"
    assert world.cluster.statuses[-1]["servingVersionUrl"] == world.status().serving_version_url

    world.clock.at += timedelta(seconds=30)
    await world.reconciler.run_pass(KEY)
    assert rollouts_timed() == timed + 30  # timed once

    world.seen(deleted=True)
    assert series() == {}
