"""Rollout decisions as plain functions: registry answer + Deployment state -> next step."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from aliasop.deployments import ObservedDeployment, observe_deployment
from aliasop.models import (
    ConditionType,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Outcome,
    Phase,
    Reason,
    RegistryProblem,
    ResolvedVersion,
)
from aliasop.rollout import (
    Decision,
    Gates,
    TagWrite,
    api_failing,
    candidate,
    decide,
    invalid_spec,
    refused,
    registry_records,
    status_to_store,
)

from observed import observed

T0 = datetime(2026, 1, 1, tzinfo=UTC)
rolled_out = observed  # every pod of the version available


def spec(**fields: object) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({"model": "models:/bikes@champion", **fields})


def rolling(version: str) -> ObservedDeployment:
    # New ReplicaSet up by one, old one still serving.
    return replace(rolled_out(version), replicas=3, updated_replicas=1, available_replicas=2)


def at(version: str) -> ResolvedVersion:
    return ResolvedVersion(version=version, run_id=f"run{version}")


def reasons(decision: Decision) -> list[str]:
    return [e.reason for e in decision.events]


def step(
    status: ModelDeploymentStatus,
    resolution: ResolvedVersion | RegistryProblem,
    observed: ObservedDeployment | None,
    minutes: int = 0,
    **spec_fields: object,
) -> Decision:
    return decide(
        spec(**spec_fields), 1, status, resolution, observed, T0 + timedelta(minutes=minutes)
    )


def serving(version: str) -> ModelDeploymentStatus:
    """Status after `version` was created and rolled out."""
    created = step(ModelDeploymentStatus(), at(version), None)
    return step(created.status, at(version), rolled_out(version)).status


def test_create_deploys_the_alias_version() -> None:
    d = step(ModelDeploymentStatus(), at("1"), None)
    assert d.pin is not None and (d.pin.version, d.pin.run_id) == ("1", "run1")
    assert d.status.phase is Phase.PROGRESSING
    assert (d.status.alias_version, d.status.target_version, d.status.serving_version) == (
        "1",
        "1",
        None,
    )
    assert reasons(d) == ["RolloutStarted"]
    assert d.status.history[0].reason == "Created"


def test_rollout_completes_when_every_pod_is_updated_and_available() -> None:
    started = step(ModelDeploymentStatus(), at("1"), None).status
    assert step(started, at("1"), rolling("1")).status.phase is Phase.PROGRESSING
    done = step(started, at("1"), rolled_out("1"), minutes=1)
    assert done.status.phase is Phase.READY
    assert (done.status.serving_version, done.status.last_good_version) == ("1", "1")
    assert done.status.history[0].outcome is Outcome.SUCCEEDED
    assert done.status.history[0].finished_at == T0 + timedelta(minutes=1)
    assert reasons(done) == ["RolloutSucceeded"]
    assert done.status.condition("Ready").status == "True"  # type: ignore[union-attr]


def test_steady_state_posts_nothing_and_changes_nothing() -> None:
    status = serving("1")
    again = step(status, at("1"), rolled_out("1"), minutes=5)
    assert again.events == []
    assert again.pin is not None and again.pin.version == "1"  # re-applied as is: no rollout
    assert again.status.model_dump(exclude={"last_resolved_time"}) == status.model_dump(
        exclude={"last_resolved_time"}
    )


def test_a_steady_status_is_written_only_when_due() -> None:
    stored = step(serving("1"), at("1"), rolled_out("1"), minutes=0).status
    soon = step(stored, at("1"), rolled_out("1"), minutes=4).status
    assert status_to_store(stored, soon, refresh_seconds=300) is None  # only the stamp moved
    assert status_to_store(stored, soon, refresh_seconds=0) == soon
    due = step(stored, at("1"), rolled_out("1"), minutes=5).status
    assert status_to_store(stored, due, refresh_seconds=300) == due


def test_a_changed_status_is_written_at_once() -> None:
    stored = step(serving("1"), at("1"), rolled_out("1"), minutes=0).status
    moved = step(stored, at("2"), rolled_out("1"), minutes=1).status
    assert status_to_store(stored, moved, refresh_seconds=300) == moved
    outage = step(stored, RegistryProblem(Reason.REGISTRY_UNAVAILABLE, "down"), rolled_out("1"))
    assert status_to_store(stored, outage.status, refresh_seconds=300) == outage.status


def test_failing_api_calls_are_reported_once_and_cleared_by_the_next_good_pass() -> None:
    stored = serving("1")
    failing = api_failing(stored, "HTTP 403: exceeded quota", T0)
    assert failing.pin is None
    assert failing.status.phase is Phase.DEGRADED
    assert "exceeded quota" in failing.status.message
    assert failing.status.condition("Degraded").reason == "KubernetesApiError"  # type: ignore[union-attr]
    assert reasons(failing) == ["KubernetesApiError"]
    assert reasons(api_failing(failing.status, "HTTP 403: exceeded quota", T0)) == []

    recovered = step(failing.status, at("1"), rolled_out("1"))
    assert recovered.status.phase is Phase.READY
    assert recovered.status.condition("Degraded").status == "False"  # type: ignore[union-attr]


def test_alias_move_rolls_forward_then_back() -> None:
    status = serving("1")
    forward = step(status, at("2"), rolled_out("1"))
    assert forward.pin is not None and forward.pin.version == "2"
    assert reasons(forward) == ["AliasMoved", "RolloutStarted"]
    assert forward.status.serving_version == "1"  # until v2's pods are all available
    assert forward.status.history[0].reason == "AliasMoved"
    on_two = step(forward.status, at("2"), rolled_out("2")).status
    assert on_two.serving_version == on_two.last_good_version == "2"

    back = step(on_two, at("1"), rolled_out("2"))
    assert back.pin is not None and back.pin.version == "1"
    on_one = step(back.status, at("1"), rolled_out("1")).status
    assert on_one.serving_version == "1"
    assert [(h.version, h.outcome) for h in on_one.history] == [
        ("1", Outcome.SUCCEEDED),
        ("2", Outcome.SUCCEEDED),
        ("1", Outcome.SUCCEEDED),
    ]


def test_a_newer_move_supersedes_a_rollout_in_progress() -> None:
    to_two = step(serving("1"), at("2"), rolled_out("1")).status
    to_three = step(to_two, at("3"), rolling("2"))
    assert to_three.pin is not None and to_three.pin.version == "3"
    assert [(h.version, h.outcome) for h in to_three.status.history[:2]] == [
        ("3", Outcome.PROGRESSING),
        ("2", Outcome.SUPERSEDED),
    ]


def test_paused_reports_the_move_but_keeps_the_pods() -> None:
    d = step(serving("1"), at("2"), rolled_out("1"), paused=True)
    assert d.pin is not None and d.pin.version == "1"
    assert d.status.alias_version == "2"
    assert d.status.serving_version == "1"
    assert d.status.phase is Phase.PAUSED
    assert "AliasMoved" in reasons(d) and "RolloutStarted" not in reasons(d)
    resumed = step(d.status, at("2"), rolled_out("1"))
    assert resumed.pin is not None and resumed.pin.version == "2"


def test_missing_alias_degrades_and_leaves_the_deployment_alone() -> None:
    problem = RegistryProblem(Reason.ALIAS_NOT_FOUND, "model 'bikes' has no alias 'champion'")
    d = step(serving("1"), problem, rolled_out("1"))
    assert d.pin is None
    assert d.status.phase is Phase.DEGRADED
    assert d.status.message == problem.message
    assert d.status.serving_version == "1"
    assert reasons(d) == ["AliasNotFound"]
    assert reasons(step(d.status, problem, rolled_out("1"))) == []  # reported once


def test_missing_model_before_anything_was_deployed() -> None:
    problem = RegistryProblem(Reason.MODEL_NOT_FOUND, "registered model 'bikes' does not exist")
    d = step(ModelDeploymentStatus(), problem, None)
    assert d.pin is None
    assert d.status.phase is Phase.DEGRADED
    assert d.status.condition("Degraded").reason == "ModelNotFound"  # type: ignore[union-attr]


def test_registry_outage_keeps_serving_and_recovers() -> None:
    outage = RegistryProblem(Reason.REGISTRY_UNAVAILABLE, "MLflow did not answer")
    status = serving("1")
    down = step(status, outage, rolled_out("1"))
    assert down.pin is None
    assert down.status.phase is Phase.READY  # still serving: the outage is not the model's fault
    assert down.status.condition("RegistryAvailable").status == "False"  # type: ignore[union-attr]
    assert reasons(down) == ["RegistryUnavailable"]
    assert reasons(step(down.status, outage, rolled_out("1"))) == []

    back = step(down.status, at("2"), rolled_out("1"))
    assert back.pin is not None and back.pin.version == "2"
    assert reasons(back) == ["AliasMoved", "RolloutStarted", "RegistryAvailable"]


def test_failed_rollout_rolls_back_and_is_not_retried_until_the_alias_moves() -> None:
    to_two = step(serving("1"), at("2"), rolled_out("1")).status
    stuck = replace(rolling("2"), deadline_exceeded=True)
    failed = step(to_two, at("2"), stuck)
    assert failed.pin is not None and failed.pin.version == "1"
    assert failed.status.phase is Phase.DEGRADED
    assert "version 2" in failed.status.message
    assert failed.status.failed_version == "2"
    assert reasons(failed) == ["RolloutFailed", "RolloutStarted"]
    assert [(h.version, h.outcome, h.reason) for h in failed.status.history[:2]] == [
        ("1", Outcome.PROGRESSING, "Rollback"),
        ("2", Outcome.FAILED, "AliasMoved"),
    ]
    held = step(failed.status, at("2"), rolled_out("1"))
    assert held.pin is not None and held.pin.version == "1"
    assert held.status.phase is Phase.DEGRADED
    assert held.status.serving_version == "1"

    away = step(held.status, at("3"), rolled_out("1"))
    assert away.pin is not None and away.pin.version == "3"
    assert away.status.failed_version is None


def test_failed_rollout_without_auto_rollback_holds() -> None:
    to_two = step(serving("1"), at("2"), rolled_out("1")).status
    stuck = replace(rolling("2"), deadline_exceeded=True)
    d = step(to_two, at("2"), stuck, rollout={"autoRollback": False})
    assert d.pin is not None and d.pin.version == "2"
    assert d.status.phase is Phase.DEGRADED
    assert d.status.serving_version == "1"


def test_history_is_bounded() -> None:
    status = serving("1")
    for version in range(2, 8):
        status = step(status, at(str(version)), rolled_out(str(version - 1)), historyLimit=3).status
    assert [h.version for h in status.history] == ["7", "6", "5"]


def test_observe_deployment_reads_the_api_shape() -> None:
    observed = observe_deployment(
        {
            "metadata": {"generation": 4},
            "spec": {
                "replicas": 2,
                "template": {
                    "metadata": {
                        "labels": {"aliasop.io/model-version": "3"},
                        "annotations": {"aliasop.io/run-id": "abc"},
                    }
                },
            },
            "status": {
                "observedGeneration": 4,
                "replicas": 2,
                "updatedReplicas": 2,
                "availableReplicas": 2,
                "conditions": [{"type": "Progressing", "reason": "NewReplicaSetAvailable"}],
            },
        }
    )
    assert (observed.version, observed.run_id) == ("3", "abc")
    assert not observed.replicas_applied
    owned = {
        "manager": "aliasop",
        "operation": "Apply",
        "fieldsV1": {"f:spec": {"f:replicas": {}}},
    }
    deployment = {"metadata": {"managedFields": [owned]}, "spec": {}}
    assert observe_deployment(deployment).replicas_applied
    owned["manager"] = "kube-controller-manager"  # an HPA scaled it since
    assert not observe_deployment(deployment).replicas_applied
    assert observed.rolled_out and not observed.deadline_exceeded
    assert not replace(observed, observed_generation=3).rolled_out


def test_a_rollout_recorded_but_not_applied_is_applied_without_a_second_record() -> None:
    started = step(serving("1"), at("2"), rolled_out("1"))
    # The Deployment apply was lost (crash, API error): the same inputs come back.
    again = step(started.status, at("2"), rolled_out("1"), minutes=1)
    assert again.pin is not None and again.pin.version == "2"
    assert reasons(again) == []
    assert [(h.version, h.outcome) for h in again.status.history[:2]] == [
        ("2", Outcome.PROGRESSING),
        ("1", Outcome.SUCCEEDED),
    ]


def test_a_rollout_applied_but_not_recorded_is_adopted() -> None:
    # The operator applied version 2, then died before writing status.
    adopted = step(serving("1"), at("2"), rolled_out("2"))
    assert adopted.status.serving_version == "2"
    assert [(h.version, h.reason, h.outcome) for h in adopted.status.history[:2]] == [
        ("2", "Adopted", Outcome.SUCCEEDED),
        ("1", "Created", Outcome.SUCCEEDED),
    ]
    assert reasons(adopted) == ["AliasMoved", "RolloutSucceeded"]


def test_a_refused_deployment_is_reported_once() -> None:
    previous = serving("1")
    decision = step(previous, at("2"), rolled_out("1"))
    first = refused(previous, decision, "Deployment", "env[0].name: Required value", T0)
    assert first.pin is None
    assert first.status.phase is Phase.DEGRADED
    assert "env[0].name: Required value" in first.status.message
    assert reasons(first) == ["AliasMoved", "DeploymentRefused"]
    again = refused(
        first.status, step(first.status, at("2"), rolled_out("1")), "Deployment", "same", T0
    )
    assert reasons(again) == []


def truths(status: ModelDeploymentStatus) -> dict[str, tuple[bool, str]]:
    """Reconciling, Stalled and Ready: (is true, reason)."""
    wanted = (ConditionType.RECONCILING, ConditionType.STALLED, ConditionType.READY)
    return {c.type: (c.is_true, c.reason) for c in status.conditions if c.type in wanted}


def test_kstatus_conditions_say_in_progress_failed_or_current() -> None:
    created = step(ModelDeploymentStatus(), at("1"), None).status
    assert truths(created) == {
        "Reconciling": (True, "RollingOut"),
        "Stalled": (False, "AsExpected"),
        "Ready": (False, "RollingOut"),
    }
    outage = RegistryProblem(Reason.REGISTRY_UNAVAILABLE, "MLflow did not answer")
    assert truths(step(ModelDeploymentStatus(), outage, None).status)["Reconciling"] == (
        True,
        "RegistryUnavailable",
    )  # the first resolution is still to come: in progress, not failed
    status = serving("1")
    assert truths(status)["Ready"] == (True, "Serving")
    assert not truths(status)["Reconciling"][0] and not truths(status)["Stalled"][0]

    paused = step(status, at("2"), rolled_out("1"), paused=True).status
    assert truths(paused)["Ready"] == (True, "Paused")  # a choice, not a failure
    down = step(status, outage, rolled_out("1")).status
    assert truths(down)["Ready"] == (True, "RegistryUnavailable")  # serving is intact
    assert not truths(down)["Stalled"][0]

    gone = RegistryProblem(Reason.ALIAS_NOT_FOUND, "model 'bikes' has no alias 'champion'")
    assert truths(step(status, gone, rolled_out("1")).status) == {
        "Reconciling": (False, "Idle"),
        "Stalled": (True, "AliasNotFound"),
        "Ready": (False, "AliasNotFound"),
    }


def test_a_failed_rollout_is_progress_while_rolling_back_then_a_stall() -> None:
    to_two = step(serving("1"), at("2"), rolled_out("1")).status
    rolling_back = step(to_two, at("2"), replace(rolling("2"), deadline_exceeded=True)).status
    assert truths(rolling_back)["Reconciling"] == (True, "RollingOut")
    assert truths(rolling_back)["Stalled"] == (True, "RolloutFailed")
    rolled_back = step(rolling_back, at("2"), rolled_out("1")).status
    assert truths(rolled_back) == {
        "Reconciling": (False, "Idle"),
        "Stalled": (True, "RolloutFailed"),
        "Ready": (False, "RolloutFailed"),
    }
    moved_on = step(rolled_back, at("3"), rolled_out("1")).status
    assert truths(moved_on)["Stalled"] == (False, "AsExpected")


def test_refused_and_invalid_specs_stall_at_the_generation_seen() -> None:
    previous = serving("1")
    refused_ = refused(
        previous, step(previous, at("2"), rolled_out("1")), "Deployment", "bad env", T0
    )
    assert truths(refused_.status)["Stalled"] == (True, "DeploymentRefused")
    invalid = invalid_spec(previous, 7, "model: bad", T0)
    assert truths(invalid.status)["Stalled"] == (True, "InvalidSpec")
    # kstatus takes the first of Reconciling and Stalled that holds: the order is fixed.
    first_invalid = invalid_spec(ModelDeploymentStatus(), 1, "model: bad", T0).status
    for status in (first_invalid, previous):
        assert [c.type for c in status.conditions][:3] == ["Ready", "Reconciling", "Stalled"]
    assert invalid.status.observed_generation == 7
    assert {c.observed_generation for c in invalid.status.conditions} == {7}
    assert reasons(invalid) == ["InvalidSpec"]
    assert reasons(invalid_spec(invalid.status, 7, "model: bad", T0)) == []


def gated(version: str, **found: Any) -> Gates:
    return Gates(version=version, **found)


def test_an_unapproved_version_waits_while_the_current_one_serves() -> None:
    status = serving("1")
    waiting = "validation_status=approved (is: pending)"
    held = decide(
        spec(rollout={"requiredTags": {"validation_status": "approved"}}),
        1, status, at("2"), rolled_out("1"), T0, gates=gated("2", unapproved=(waiting,)),
    )  # fmt: skip
    assert held.pin is not None and held.pin.version == "1"
    assert held.status.phase is Phase.READY
    assert "version 2 waits for approval: validation_status=approved" in held.status.message
    approved = held.status.condition(ConditionType.APPROVED)
    assert approved is not None and (approved.is_true, approved.reason) == (
        False,
        "WaitingForApproval",
    )
    assert truths(held.status) == {
        "Ready": (True, "WaitingForApproval"),  # a person's choice: kstatus Current
        "Reconciling": (False, "Idle"),
        "Stalled": (False, "AsExpected"),
    }
    assert reasons(held) == ["AliasMoved", "WaitingForApproval"]
    again = decide(
        spec(rollout={"requiredTags": {"validation_status": "approved"}}),
        1, held.status, at("2"), rolled_out("1"), T0, gates=gated("2", unapproved=(waiting,)),
    )  # fmt: skip
    assert reasons(again) == []  # said once

    go = decide(
        spec(rollout={"requiredTags": {"validation_status": "approved"}}),
        1, again.status, at("2"), rolled_out("1"), T0, gates=gated("2"),
    )  # fmt: skip
    assert go.pin is not None and go.pin.version == "2"
    assert reasons(go) == ["RolloutStarted"]
    assert go.status.condition(ConditionType.APPROVED).is_true  # type: ignore[union-attr]


def test_an_unapproved_first_version_deploys_nothing_yet() -> None:
    d = decide(
        spec(rollout={"requiredTags": {"stage": "prod"}}),
        1, ModelDeploymentStatus(), at("1"), None, T0,
        gates=gated("1", unapproved=("stage=prod (is: none)",)),
    )  # fmt: skip
    assert d.pin is None
    assert d.status.phase is Phase.PENDING
    assert truths(d.status)["Ready"] == (False, "WaitingForApproval")
    assert truths(d.status)["Reconciling"] == (False, "Idle")


def test_a_version_that_breaks_the_inputs_is_held_back_and_stalls() -> None:
    status = serving("1")
    breaking = ("column 'wind' (double) is gone",)
    ungated = step(status, at("2"), rolled_out("1"))  # for comparison: without gates it rolls
    assert ungated.pin is not None and ungated.pin.version == "2"
    held = decide(
        spec(), 1, status, at("2"), rolled_out("1"), T0, gates=gated("2", breaking=breaking)
    )
    assert held.pin is not None and held.pin.version == "1"
    assert held.status.phase is Phase.DEGRADED
    assert "column 'wind' (double) is gone" in held.status.message
    assert truths(held.status)["Stalled"] == (True, "SignatureIncompatible")
    compatible = held.status.condition(ConditionType.SIGNATURE_COMPATIBLE)
    assert compatible is not None and not compatible.is_true
    assert "wind" in compatible.message
    assert reasons(held) == ["AliasMoved", "SignatureIncompatible"]
    assert held.status.serving_version == "1"

    back = step(held.status, at("1"), rolled_out("1"))  # the alias moves back: no candidate
    assert truths(back.status)["Stalled"] == (False, "AsExpected")
    assert back.status.condition(ConditionType.SIGNATURE_COMPATIBLE).is_true  # type: ignore[union-attr]


def test_the_candidate_is_the_alias_version_unless_it_runs_failed_or_is_paused() -> None:
    status = serving("1")
    assert candidate(spec(), status, at("2"), rolled_out("1")) == "2"
    assert candidate(spec(), status, at("1"), rolled_out("1")) is None
    assert candidate(spec(paused=True), status, at("2"), rolled_out("1")) is None
    failed = status.model_copy(update={"failed_version": "2"})
    assert candidate(spec(), failed, at("2"), rolled_out("1")) is None


def test_the_registry_is_told_what_serves_what_was_rolled_back_and_held_back() -> None:
    created = step(ModelDeploymentStatus(), at("1"), None).status
    assert registry_records(ModelDeploymentStatus(), created, "ml/bikes") == []  # not yet
    on_one = step(created, at("1"), rolled_out("1")).status
    assert registry_records(created, on_one, "ml/bikes") == [
        TagWrite("1", "aliasop/ml/bikes", "serving")
    ]
    to_two = step(on_one, at("2"), rolled_out("1")).status
    on_two = step(to_two, at("2"), rolled_out("2")).status
    assert registry_records(to_two, on_two, "ml/bikes") == [
        TagWrite("1", "aliasop/ml/bikes", None),  # no longer serves there
        TagWrite("2", "aliasop/ml/bikes", "serving"),
    ]
    to_three = step(on_two, at("3"), rolled_out("2")).status
    failed = step(to_three, at("3"), replace(rolling("3"), deadline_exceeded=True)).status
    [rolled_back] = registry_records(to_three, failed, "ml/bikes")
    assert rolled_back.version == "3" and rolled_back.value is not None
    assert rolled_back.value.startswith("rolled back: version 3 did not become available")

    breaking = gated("4", breaking=("column 'wind' (double) is gone",))
    held = decide(spec(), 1, on_two, at("4"), rolled_out("2"), T0, gates=breaking).status
    [held_back] = registry_records(on_two, held, "ml/bikes")
    assert (held_back.version, held_back.value) == (
        "4",
        "held back: column 'wind' (double) is gone",
    )
    again = decide(spec(), 1, held, at("4"), rolled_out("2"), T0, gates=breaking).status
    assert registry_records(held, again, "ml/bikes") == []  # on transitions only


def test_revert_alias_asks_for_the_alias_back_with_the_rollback() -> None:
    to_two = step(serving("1"), at("2"), rolled_out("1")).status
    stuck = replace(rolling("2"), deadline_exceeded=True)
    kept = step(to_two, at("2"), stuck)
    assert kept.revert_alias_to is None
    reverted = step(to_two, at("2"), stuck, rollout={"onFailure": "RevertAlias"})
    assert reverted.revert_alias_to == "1"
    assert "rolled back to version 1, and models:/bikes@champion with it" in reverted.status.message
