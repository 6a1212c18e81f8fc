"""The polling cycle under every fault the fake cluster can show, with a clock the test moves.

Each test states a promise: no false failure and no second submission on a missing answer, no lost
failure reason, no crash, and one pipeline's trouble stays with that pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

import pytest
from fake_cluster import NOW, Clock, FakeCluster

from sl_pipelines.core.layout import SessionPaths
from sl_pipelines.core.states import JobState
from sl_pipelines.core.tracker_state import record_failure
from sl_pipelines.orchestration.cycle import Unchanged, cancel_runs, run_cycle
from sl_pipelines.orchestration.pipeline import ProcessingPipeline
from sl_pipelines.vocabulary import ProcessingStatus


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(
    cluster: FakeCluster, pipeline: str = "suite2p", session: str = "s1", **params: int
) -> ProcessingPipeline:
    paths = SessionPaths(cluster.storage, cluster.working, "p", "A1", session)
    return ProcessingPipeline.create(pipeline, [paths], cluster, parameters={"planes": 2, **params})


def names(p: ProcessingPipeline, stage: int) -> list[str]:
    return [r.name for r in p.resolved.stages[stage]]


MEMO: list[Unchanged | None] = [None]
"""The cycles' memory of unchanged runs, as a manager keeps it (or none, as runtime_cycle)."""


@pytest.fixture(autouse=True, params=[False, True], ids=["every-run-decided", "unchanged-runs-skipped"])
def memo(request: pytest.FixtureRequest) -> Iterator[Unchanged | None]:
    """Every promise here holds whether or not runs whose facts did not change are decided again."""
    MEMO[0] = Unchanged() if request.param else None
    yield MEMO[0]
    MEMO[0] = None


def cycle(cluster: FakeCluster, clock: Clock, *pipelines: ProcessingPipeline, seconds: float = 5) -> None:
    clock.now += seconds
    run_cycle(cluster, pipelines, clock, unchanged=MEMO[0])


def finish_stage(cluster: FakeCluster, p: ProcessingPipeline, stage: int) -> None:
    for name in names(p, stage):
        cluster.finish(name, p.remote_tracker_path)


def drive_to_success(cluster: FakeCluster, clock: Clock, p: ProcessingPipeline) -> None:
    for _ in range(10):
        if not p.is_running:
            break
        if p.stage:
            finish_stage(cluster, p, p.stage)
        cycle(cluster, clock, p)
    assert p.status is ProcessingStatus.SUCCEEDED, p.describe()


def submitted_once(cluster: FakeCluster, p: ProcessingPipeline) -> bool:
    return all(cluster.submissions(r.name) == 1 for r in p.resolved.all_jobs())


# ----------------------------------------------------------------------------- Slurm does not answer


def test_a_controller_outage_while_a_stage_ends_is_waited_out(cluster: FakeCluster, clock: Clock) -> None:
    p = make(cluster)
    cycle(cluster, clock, p)
    cluster.run(*names(p, 1))
    cluster.slurm_down = True
    finish_stage(cluster, p, 1)  # the jobs end during the outage
    for _ in range(30):  # 150 s: far past every grace period
        cycle(cluster, clock, p)
    assert p.is_running and p.stage == 1, p.describe()
    assert "Slurm did not answer" in p.state.note
    assert not any(e[0] == "error" for e in cluster.log), "no failure written while Slurm was silent"
    cluster.slurm_down = False
    cycle(cluster, clock, p)
    assert p.stage == 2
    drive_to_success(cluster, clock, p)
    assert submitted_once(cluster, p)


def test_sbatch_that_cannot_reach_the_controller_is_tried_again_never_failed(
    cluster: FakeCluster, clock: Clock
) -> None:
    p = make(cluster)
    cluster.defer_all = "sbatch said: Unable to contact slurm controller (connect failure)"
    for _ in range(3):
        cycle(cluster, clock, p)
    assert p.is_running and p.stage == 1 and p.state.job_ids == {}
    assert "held back" in p.state.note
    cluster.defer_all = ""
    cycle(cluster, clock, p)
    assert set(p.state.job_ids) == set(names(p, 1))
    drive_to_success(cluster, clock, p)
    assert submitted_once(cluster, p)


def test_an_interrupted_submission_is_reconciled_by_name(cluster: FakeCluster, clock: Clock) -> None:
    p = make(cluster, "behavior")
    cluster.drop_after = 3  # three jobs answered, the fourth reached Slurm unanswered, three never tried
    cycle(cluster, clock, p)
    assert len(p.state.job_ids) == 3
    cluster.drop_after = None
    cycle(cluster, clock, p)
    assert len(p.state.job_ids) == 7
    drive_to_success(cluster, clock, p)
    assert submitted_once(cluster, p)


# ----------------------------------------------------------------------------- uncertain states


def test_a_job_purged_after_reporting_counts_as_done(cluster: FakeCluster, clock: Clock) -> None:
    p = make(cluster, "behavior")
    cycle(cluster, clock, p)
    finish_stage(cluster, p, 1)
    for name in names(p, 1):
        cluster.job(name).purged = True
    cycle(cluster, clock, p)
    assert p.status is ProcessingStatus.SUCCEEDED


def test_a_lost_unreported_job_fails_only_after_the_grace(cluster: FakeCluster, clock: Clock) -> None:
    p = make(cluster, "checksum")
    cycle(cluster, clock, p)
    (name,) = names(p, 1)
    cluster.job(name).purged = True
    cycle(cluster, clock, p, seconds=1)
    cycle(cluster, clock, p, seconds=50)
    assert p.is_running
    cycle(cluster, clock, p, seconds=20)
    assert p.status is ProcessingStatus.FAILED
    assert p.failure is not None and "no longer knows" in p.failure.reason
    assert cluster.trackers[p.remote_tracker_path].failure is not None


def test_a_node_failure_followed_by_a_requeue_is_not_a_failure(cluster: FakeCluster, clock: Clock) -> None:
    p = make(cluster, "checksum")
    cycle(cluster, clock, p)
    (name,) = names(p, 1)
    cluster.fail(name, JobState.NODE_FAIL)
    for _ in range(5):
        cycle(cluster, clock, p, seconds=20)
    assert p.is_running
    cluster.job(name).state = JobState.PENDING  # Slurm requeued it
    cycle(cluster, clock, p)
    drive_to_success(cluster, clock, p)
    assert submitted_once(cluster, p)


def test_a_state_nobody_knows_is_waited_out_then_fails_and_is_cancelled(
    cluster: FakeCluster, clock: Clock
) -> None:
    p = make(cluster, "checksum")
    cycle(cluster, clock, p)
    (name,) = names(p, 1)
    cluster.job(name).state = JobState.UNKNOWN
    cycle(cluster, clock, p, seconds=1)
    cycle(cluster, clock, p, seconds=300)
    assert p.is_running
    cycle(cluster, clock, p, seconds=301)
    assert p.status is ProcessingStatus.FAILED and p.failure is not None
    assert "does not know" in p.failure.reason
    assert ("cancel", cluster.job(name).job_id) in cluster.log


# ----------------------------------------------------------------------------- failures


def test_the_cause_is_recorded_before_the_siblings_are_cancelled(cluster: FakeCluster, clock: Clock) -> None:
    p = make(cluster, "behavior")
    cycle(cluster, clock, p)
    first, *siblings = names(p, 1)
    cluster.run(*siblings)
    cluster.fail(first, exit_code=1)
    cycle(cluster, clock, p)
    events = [e[0] for e in cluster.log if e[0] in ("error", "cancel")]
    assert events == ["error", "cancel"]
    failure = cluster.trackers[p.remote_tracker_path].failure
    assert failure is not None and failure.job == first
    assert p.failure is not None and p.failure.job == first


def test_a_busy_tracker_lock_delays_the_record_and_the_cancel(cluster: FakeCluster, clock: Clock) -> None:
    p = make(cluster, "behavior")
    cycle(cluster, clock, p)
    first, *siblings = names(p, 1)
    cluster.run(*siblings)
    cluster.fail(first)
    cluster.busy_locks.add(p.remote_tracker_path)
    cycle(cluster, clock, p)
    assert p.is_running and not any(e[0] == "cancel" for e in cluster.log)
    cluster.busy_locks.clear()
    cycle(cluster, clock, p)
    assert p.status is ProcessingStatus.FAILED
    assert cluster.trackers[p.remote_tracker_path].failure is not None


@pytest.mark.parametrize("who", ["unknown", "manager", "slurm id"])
def test_a_failure_pinned_on_a_job_outside_the_run_fails_it_without_crashing(
    cluster: FakeCluster, clock: Clock, who: str
) -> None:
    p = make(cluster, "behavior")
    cycle(cluster, clock, p)
    name = names(p, 1)[2]
    job = p.state.job_ids[name] if who == "slurm id" else who
    cluster.files[p.job(name).stderr_path] = "the job's last words\n"
    state = cluster.trackers[p.remote_tracker_path]
    cluster.trackers[p.remote_tracker_path] = record_failure(
        state, p.manager_id, job, "stopped by the operator", now=NOW, path=p.remote_tracker_path
    )
    cycle(cluster, clock, p)
    assert p.status is ProcessingStatus.FAILED and p.failure is not None
    assert "stopped by the operator" in p.failure.reason
    if who == "slurm id":  # a numeric SLURM_JOB_ID is the run's own job: its stderr is shown
        assert p.failure.job == name and "last words" in p.failure.stderr_tail


def test_a_refused_job_fails_only_its_pipeline(cluster: FakeCluster, clock: Clock) -> None:
    pipelines = [make(cluster, "behavior", f"s{i}") for i in range(3)]
    bad = names(pipelines[1], 1)[3]
    cluster.refuse[bad] = "invalid partition specified"
    cycle(cluster, clock, *pipelines)
    assert pipelines[1].status is ProcessingStatus.FAILED and pipelines[1].failure is not None
    assert "invalid partition" in pipelines[1].failure.reason
    cancelled = {i for e in cluster.log if e[0] == "cancel" for i in e[1:]}
    assert cancelled == set(pipelines[1].state.job_ids.values()) and len(cancelled) == 6
    assert cluster.trackers[pipelines[1].remote_tracker_path].failure is not None
    for p in (pipelines[0], pipelines[2]):
        drive_to_success(cluster, clock, p)


def test_an_unwritable_job_folder_fails_that_pipeline_once_with_the_reason(
    cluster: FakeCluster, clock: Clock
) -> None:
    pipelines = [make(cluster, "checksum", f"s{i}") for i in range(3)]
    cluster.unwritable.add(names(pipelines[0], 1)[0])
    for _ in range(5):
        cycle(cluster, clock, *pipelines)
    assert pipelines[0].status is ProcessingStatus.FAILED and pipelines[0].failure is not None
    assert "Permission denied" in pipelines[0].failure.reason
    assert sum(1 for e in cluster.log if e[0] == "submit" and names(pipelines[0], 1)[0] in e) == 1
    for p in pipelines[1:]:
        drive_to_success(cluster, clock, p)


def test_trouble_concluding_one_pipeline_stays_with_it(cluster: FakeCluster, clock: Clock) -> None:
    done, failing, going = (make(cluster, "checksum", f"s{i}") for i in range(3))
    cycle(cluster, clock, done, failing, going)
    cluster.unremovable.add(done.resolved.jobs_folder)
    cluster.unreadable.add(failing.job(names(failing, 1)[0]).stderr_path)
    finish_stage(cluster, done, 1)
    cluster.fail(names(failing, 1)[0])
    cycle(cluster, clock, done, failing, going)
    assert done.status is ProcessingStatus.SUCCEEDED
    assert failing.status is ProcessingStatus.FAILED
    assert going.is_running
    drive_to_success(cluster, clock, going)


def test_cancelling_finds_the_jobs_of_an_interrupted_submission_by_name(
    cluster: FakeCluster, clock: Clock
) -> None:
    p = make(cluster, "checksum")
    cluster.drop_after = 0  # sbatch reached Slurm, its answer never came back: no id journaled
    cycle(cluster, clock, p)
    assert p.state.job_ids == {}
    cancel_runs(cluster, [p], "cancelled by the user (Ctrl-C)")
    (name,) = names(p, 1)
    assert cluster.job(name).state is JobState.CANCELLED
    assert p.status is ProcessingStatus.FAILED
    failure = cluster.trackers[p.remote_tracker_path].failure
    assert failure is not None and "Ctrl-C" in failure.reason


def test_one_probe_per_cycle_for_many_pipelines(cluster: FakeCluster, clock: Clock) -> None:
    pipelines = [make(cluster, "behavior", f"s{i}") for i in range(20)]
    cycle(cluster, clock, *pipelines)
    before = cluster.probes
    cycle(cluster, clock, *pipelines)
    assert cluster.probes == before + 1


def test_paths_in_the_fake_are_the_pipelines_paths(cluster: FakeCluster) -> None:
    p = make(cluster, "checksum")
    assert p.remote_tracker_path == PurePosixPath(
        "/fake/storage/p/A1/s1/tracking_data/checksum_resolution_tracker.yaml"
    )


def test_a_job_requeued_after_reporting_is_not_run_again(cluster: FakeCluster, clock: Clock) -> None:
    p = make(cluster)
    cycle(cluster, clock, p)
    (name,) = names(p, 1)
    cluster.finish(name, p.remote_tracker_path)
    cluster.job(name).state = JobState.REQUEUE_HOLD  # its completion message was lost; Slurm requeued it
    cycle(cluster, clock, p)
    assert p.stage == 2
    assert ("cancel", cluster.job(name).job_id) in cluster.log
    drive_to_success(cluster, clock, p)
    assert submitted_once(cluster, p)


def test_a_stage_goes_out_as_one_array_per_resource_group(cluster: FakeCluster, clock: Clock) -> None:
    behavior = make(cluster, "behavior")
    cycle(cluster, clock, behavior)
    assert cluster.arrays == 2  # runtime and face camera ask for 2 CPUs, the other five for 1
    suite2p = make(cluster, "suite2p", "s2", planes=6)
    cycle(cluster, clock, suite2p)
    finish_stage(cluster, suite2p, 1)
    cycle(cluster, clock, suite2p)
    assert suite2p.stage == 2 and cluster.arrays == 3  # the six planes: one array


def test_a_submit_limit_holds_jobs_back_and_the_run_still_finishes(
    cluster: FakeCluster, clock: Clock
) -> None:
    p = make(cluster, "suite2p", planes=6)
    cluster.submit_limit = 2
    cycle(cluster, clock, p)
    finish_stage(cluster, p, 1)
    for _ in range(12):  # the six planes no longer fit one array: one by one, as jobs finish
        cycle(cluster, clock, p)
        for name in names(p, 2):
            if name in p.state.job_ids and cluster.job(name).state is JobState.PENDING:
                cluster.finish(name, p.remote_tracker_path)
        if p.stage == 3:
            break
    assert p.stage == 3 and p.state.limited
    drive_to_success(cluster, clock, p)
    assert submitted_once(cluster, p)


def test_a_run_taken_over_by_another_manager_is_left_to_it(cluster: FakeCluster, clock: Clock) -> None:
    p = make(cluster)
    cycle(cluster, clock, p)
    assert p.lease_held and cluster.leases[p.lease_path] == p.holder.holder_id
    cluster.leases[p.lease_path] = "another-manager"  # taken over with --take-over elsewhere
    cluster.fail(names(p, 1)[0])
    writes = len(cluster.log)
    cycle(cluster, clock, p)
    assert p.status is ProcessingStatus.ABORTED and p.failure is not None
    assert "another-manager" in p.failure.reason
    assert cluster.log[writes:] == [], "nothing recorded, cancelled or written: the run is the other's now"


# ----------------------------------------------------------------------------- runs that did not change


def test_a_run_whose_facts_did_not_change_is_not_decided_again_until_they_do(
    cluster: FakeCluster, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    memo = Unchanged()
    quiet, busy = make(cluster, session="s1"), make(cluster, session="s2")
    decided: list[str] = []
    for p in (quiet, busy):
        decide = p.decide
        monkeypatch.setattr(p, "decide", lambda *a, p=p, d=decide: decided.append(p.session) or d(*a))
    run_cycle(cluster, [quiet, busy], clock, unchanged=memo)  # both submit their first stage
    run_cycle(cluster, [quiet, busy], clock, unchanged=memo)  # both wait: noted
    decided.clear()
    cluster.run(*names(busy, 1))
    run_cycle(cluster, [quiet, busy], clock, unchanged=memo)
    assert decided == ["s2"]  # its job started: decided; the other's facts are the same
    decided.clear()
    finish_stage(cluster, quiet, 1)  # the tracker and the job states change
    run_cycle(cluster, [quiet, busy], clock, unchanged=memo)
    assert decided == ["s1"] and quiet.stage == 2


def test_a_pending_timer_fires_while_the_facts_stay_the_same(
    cluster: FakeCluster, clock: Clock, memo: Unchanged | None
) -> None:
    p = make(cluster)
    cycle(cluster, clock, p)
    name = names(p, 1)[0]
    cluster.job(name).purged = True  # Slurm forgets it; it never reported: the same facts every cycle
    for _ in range(30):
        cycle(cluster, clock, p)
    assert p.status is ProcessingStatus.FAILED and p.failure is not None
    assert "no longer knows" in p.failure.reason


# ----------------------------------------------------------------------------- the probe's request


def test_a_runs_request_is_built_again_whenever_what_it_asks_for_changes(
    cluster: FakeCluster, clock: Clock
) -> None:
    p = make(cluster)
    first = p.probe_request()
    assert p.probe_request() is first  # nothing changed: the same request, not built again
    cycle(cluster, clock, p)  # claims and submits stage 1
    submitted = p.probe_request()
    assert submitted is not first and set(submitted.job_ids) == {p.state.job_ids[n] for n in names(p, 1)}
    assert submitted.leases == ((p.lease_path, p.holder.holder_id),) and p.lease_held
    p.lease_held = False  # handed over: no lease to renew any more
    assert p.probe_request().leases == ()
    p.lease_held = True
    p.usage_wanted["1234"] = ("x", "COMPLETED", 1)  # an ended job's usage: asked for, once
    asked = p.probe_request()
    assert [job for job, _ in asked.usage] == ["1234"]
    del p.usage_wanted["1234"]
    assert p.probe_request().usage == ()
    finish_stage(cluster, p, 1)
    cycle(cluster, clock, p)
    assert p.stage == 2 and set(p.probe_request().job_ids) == {p.state.job_ids[n] for n in names(p, 2)}
