"""The rollout's vocabulary, shared by the decisions and the renderers: which resource owns
the children, a version pinned to its run, the sides that serve beside each other.

Pure, and imports nothing of aliasop's: every other module may use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# The sides (variants) of a resource's serving pods: the main side always; a canary's beside
# it while the Canary strategy rolls a version out; a challenger's with spec.challenger.
MAIN, CANARY, CHALLENGER = "main", "canary", "challenger"


@dataclass(frozen=True)
class Owner:
    """The ModelDeployment that owns the children, for names and ownerReferences."""

    name: str
    namespace: str
    uid: str
    # Its labels that the children carry too: those a shard's selector names (sharding).
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PinnedVersion:
    """A model version and the MLflow run that produced it: what a Deployment runs."""

    version: str
    run_id: str


@dataclass(frozen=True)
class Side:
    """A side's Deployment to apply (a canary's, a challenger's): its version and replicas."""

    pin: PinnedVersion
    replicas: int


@dataclass(frozen=True)
class Requests:
    """What a person asks of a rollout through the resource's annotations (see
    models.REQUEST_ANNOTATIONS), each the version it is about; "": not asked."""

    promote: str = ""  # end the canary's manual pause
    promote_full: str = ""  # skip the canary's remaining steps
    abort: str = ""  # stop the rollout, back to the last good version
    retry: str = ""  # roll a failed or aborted version out again


NOTHING_ASKED = Requests()
