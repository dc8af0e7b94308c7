"""The durable queue on a real SQLite database: exclusive claims, back-off per destination, parking,
leases that expire after a crash, prerequisites, and routing each completion event exactly once."""
from __future__ import annotations

import random
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select, text

from neuropetrix.config.settings import RetrySettings, Settings
from neuropetrix.engine.dispatch import Dispatcher
from neuropetrix.engine.jobs import JobFailure, JobQueue, backoff_seconds, new_job
from neuropetrix.engine.routes.rules import compile_routes
from neuropetrix.store.db import make_engine, make_sessionmaker, open_database, utcnow
from neuropetrix.store.files import FileStore, relative_path
from neuropetrix.store.jobs_models import Destination, Job
from neuropetrix.store.models import Event, Instance, Patient, Series, Study
from tests.engine.conftest import ManualClock

RETRY = RetrySettings(base_seconds=30, max_seconds=600, jitter=0.2, max_attempts=3)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same tests on SQLite (conditional UPDATE claims) and PostgreSQL (FOR UPDATE SKIP LOCKED)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'q.db'}"
    server = request.getfixturevalue("postgres_server")
    name = f"q{uuid.uuid4().hex[:12]}"
    admin = make_engine(f"{server}/postgres").execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return f"{server}/{name}"


@pytest.fixture
def db(db_url: str):
    engine, sessions = open_database(db_url)
    yield engine, sessions
    engine.dispose()


def add_job(sessions, destination: str = "dicom:pacs", kind: str = "forward", after: int | None = None,
            index: int = 0) -> int:
    with sessions.begin() as s:
        job = new_job(kind, "1.2.3", "r", index, destination, RETRY.max_attempts, objects=["study"])
        job.after_id = after
        s.add(job)
        s.flush()
        return job.id


def state(sessions, job_id: int) -> Job:
    with sessions() as s:
        return s.get(Job, job_id)


def test_backoff_doubles_is_capped_and_jittered() -> None:
    rng = random.Random(1)
    delays = [backoff_seconds(n, RETRY, rng) for n in range(1, 8)]
    for n, d in enumerate(delays, start=1):
        full = min(600, 30 * 2 ** (n - 1))
        assert full * 0.8 <= d <= full
    assert len({round(backoff_seconds(2, RETRY, rng), 3) for _ in range(20)}) > 1


def test_two_workers_never_take_the_same_job(db, db_url: str) -> None:
    engine, sessions = db
    ids = {add_job(sessions, destination=f"dicom:p{i % 5}", index=i) for i in range(40)}
    taken: list[int] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        # each worker on its own engine and connection pool, as two nodes would be
        queue = JobQueue(make_sessionmaker(make_engine(db_url)), RETRY, 60)
        while (job := queue.claim(name, ("forward",))) is not None:
            with lock:
                taken.append(job.id)
            queue.finish(job, name, {})

    workers = [f"w{i}" for i in range(4)]
    threads = [threading.Thread(target=work, args=(name,)) for name in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(ids)                      # every job once, none twice
    with sessions() as s:
        assert len({j.worker for j in s.scalars(select(Job))}) >= 2       # they really competed


def test_a_dead_destination_holds_up_only_its_own_jobs(db) -> None:
    _, sessions = db
    queue = JobQueue(sessions, RETRY, 60)
    dead1, dead2 = add_job(sessions, "dicom:dead", index=0), add_job(sessions, "dicom:dead", index=1)
    alive = add_job(sessions, "hl7:hbys", kind="hl7", index=2)
    job = queue.claim("w", ("forward", "hl7"))
    assert job.id == dead1
    assert queue.fail(job, "w", JobFailure("connection refused"), "delivery.failed") == "queued"
    # the dead destination is backing off: its other job waits too, the live one goes
    job = queue.claim("w", ("forward", "hl7"))
    assert job.id == alive
    queue.finish(job, "w", {"ack": "AA"}, "delivery.done")
    assert queue.claim("w", ("forward", "hl7")) is None
    with sessions() as s:
        dest = s.get(Destination, "dicom:dead")
        assert dest.failures == 1 and dest.blocked_until > utcnow() + timedelta(seconds=20)
        assert s.get(Job, dead2).state == "queued" and s.get(Job, dead1).last_error == "connection refused"
        kinds = [e.kind for e in s.scalars(select(Event).order_by(Event.id))]
    assert kinds == ["delivery.failed", "delivery.done"]


def test_parked_after_the_limit_and_requeued_by_an_operator(db) -> None:
    _, sessions = db
    queue = JobQueue(sessions, RETRY, 60)
    job_id = add_job(sessions)
    for attempt in range(1, RETRY.max_attempts + 1):
        with sessions.begin() as s:                         # time passes: the back-off is over
            s.get(Job, job_id).next_attempt_at = utcnow()
            dest = s.get(Destination, "dicom:pacs")
            if dest is not None:
                dest.blocked_until = None
        job = queue.claim("w", ("forward",))
        assert job is not None and job.attempts == attempt
        outcome = queue.fail(job, "w", JobFailure("refused"))
    assert outcome == "failed" and state(sessions, job_id).state == "failed"
    assert queue.claim("w", ("forward",)) is None
    queue.requeue(job_id)
    job = queue.claim("w", ("forward",))
    assert job is not None and job.attempts == 1


def test_permanent_failure_parks_at_once_without_blocking_the_destination(db) -> None:
    _, sessions = db
    queue = JobQueue(sessions, RETRY, 60)
    first, second = add_job(sessions, "hl7:hbys", "hl7", index=0), add_job(sessions, "hl7:hbys", "hl7", index=1)
    job = queue.claim("w", ("hl7",))
    assert queue.fail(job, "w", JobFailure("rejected (AR)", permanent=True)) == "failed"
    assert queue.claim("w", ("hl7",)).id == second
    assert state(sessions, first).attempts == 1


def test_retry_after_is_honoured(db) -> None:
    _, sessions = db
    queue = JobQueue(sessions, RETRY, 60)
    job_id = add_job(sessions, "fhir:hbys", "fhir")
    at = utcnow() + timedelta(seconds=2)
    queue.fail(queue.claim("w", ("fhir",)), "w", JobFailure("HTTP 429", retry_at=at))
    assert state(sessions, job_id).next_attempt_at == at


def test_an_abandoned_job_is_taken_again_after_its_lease(db) -> None:
    _, sessions = db
    job_id = add_job(sessions)
    clock = ManualClock()
    crashed, survivor = JobQueue(sessions, RETRY, 0.3, clock), JobQueue(sessions, RETRY, 60, clock)
    job = crashed.claim("crashed-node", ("forward",))
    assert survivor.claim("other", ("forward",)) is None        # leased: not taken
    clock.advance(0.4)
    again = survivor.claim("other", ("forward",))
    assert again is not None and again.id == job_id and again.attempts == 2
    assert crashed.finish(job, "crashed-node", {}) is False      # the old worker lost it
    assert survivor.finish(again, "other", {}) is True


def test_renewed_leases_are_kept(db) -> None:
    _, sessions = db
    add_job(sessions)
    clock = ManualClock()
    queue = JobQueue(sessions, RETRY, 0.3, clock)
    job = queue.claim("w", ("forward",))
    for _ in range(3):
        clock.advance(0.15)
        queue.renew("w", [job.id])
    assert queue.claim("other", ("forward",)) is None


def test_result_deliveries_wait_for_their_analysis(db) -> None:
    _, sessions = db
    queue = JobQueue(sessions, RETRY, 60)
    analysis = add_job(sessions, "analysis", "analyze", index=0)
    add_job(sessions, "dicom:pacs", "forward", after=analysis, index=1)
    assert queue.claim("w", ("forward",)) is None
    queue.finish(queue.claim("a", ("analyze",)), "a", {"lesions": 2})
    assert queue.claim("w", ("forward",)) is not None


def stored_study(sessions, storage: FileStore) -> None:
    """One PET instance on disk and in the index, as the SCP would leave it."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.128"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = "1.2.3.1.1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = "1.2.3", "1.2.3.1", "PT"
    rel = relative_path("1.2.3", "1.2.3.1", "1.2.3.1.1")
    storage.path_of(rel).parent.mkdir(parents=True)
    ds.save_as(storage.path_of(rel), enforce_file_format=True)
    now = utcnow()
    with sessions.begin() as s:
        patient = Patient(patient_id="P", issuer="", name="", birth_date="", sex="")
        s.add(patient)
        s.flush()
        study = Study(study_uid="1.2.3", patient_pk=patient.id, study_date="", study_time="", accession_number="",
                      description="", state="complete", first_received_at=now, last_received_at=now,
                      completion_count=1)
        s.add(study)
        s.flush()
        series = Series(series_uid="1.2.3.1", study_pk=study.id, modality="PT", description="", body_part="",
                        frame_of_reference_uid="", calling_ae="PETCT1")
        s.add(series)
        s.flush()
        s.add(Instance(sop_instance_uid="1.2.3.1.1", sop_class_uid=ds.SOPClassUID, series_pk=series.id,
                       transfer_syntax_uid=ExplicitVRLittleEndian, path=rel, size_bytes=1, received_at=now,
                       calling_ae="PETCT1", calling_host="127.0.0.1"))


def test_each_completion_event_is_routed_once(db, tmp_path: Path) -> None:
    _, sessions = db
    storage = FileStore(tmp_path / "storage")
    stored_study(sessions, storage)
    settings = Settings.model_validate({
        "peers": [{"name": "pacs", "ae_title": "P", "host": "h", "port": 104}],
        "routes": [{"name": "pet", "match": {"modality": "PT", "calling_ae": "PETCT1"},
                    "actions": ["analyze", {"forward": "pacs", "objects": ["seg"]}]},
                   {"name": "ct", "match": {"modality": "CT"}, "actions": [{"forward": "pacs"}]}]})

    def complete() -> None:
        with sessions.begin() as s:
            s.add(Event(kind="study.complete", study_uid="1.2.3", created_at=utcnow(), payload={}))
            s.add(Event(kind="study.received", study_uid="1.2.4", created_at=utcnow(), payload={}))

    dispatcher = Dispatcher(sessions, storage, compile_routes(settings), RETRY)
    complete()
    assert dispatcher.run_once() == 2                           # rule pet: analyze + forward
    assert dispatcher.run_once() == 0
    restarted = Dispatcher(sessions, storage, compile_routes(settings), RETRY)
    assert restarted.run_once() == 0                            # a restart does not route it again
    complete()                                                  # the study re-opened and completed again
    assert restarted.run_once() == 2
    with sessions() as s:
        jobs = list(s.scalars(select(Job).order_by(Job.id)))
    assert [(j.route, j.kind) for j in jobs] == [("pet", "analyze"), ("pet", "forward")] * 2
    assert jobs[1].after_id == jobs[0].id and jobs[3].after_id == jobs[2].id


def test_storage_commitment_answers_settle_the_job(db) -> None:
    from neuropetrix.store.jobs_models import COMMITTING

    _, sessions = db
    job_id = add_job(sessions)
    clock = ManualClock()
    queue = JobQueue(sessions, RETRY, 60, clock)
    job = queue.claim("w", ("forward",))
    assert queue.await_commitment(job, "w", {"sent": 3}, timeout=0.3)
    assert state(sessions, job_id).state == COMMITTING
    assert queue.claim("other", ("forward",)) is None                 # waiting is not abandoned
    assert queue.settle_commitment(job_id, attempt=7, failed=[]) is False   # not our attempt
    assert queue.settle_commitment(job_id, job.attempts, [("1.2.3.9", 0x0110)]) is True
    failed = state(sessions, job_id)
    assert failed.state == "queued" and "did not commit 1 instance(s): 1.2.3.9 (0x0110)" in failed.last_error
    with sessions.begin() as s:
        s.get(Job, job_id).next_attempt_at = clock.now()
        s.get(Destination, "dicom:pacs").blocked_until = None
    job = queue.claim("w", ("forward",))
    queue.await_commitment(job, "w", {"sent": 3}, timeout=0.3)
    clock.advance(0.4)                                                      # no answer in time: sent again
    again = queue.claim("other", ("forward",))
    assert again is not None and again.attempts == 3
    assert queue.settle_commitment(job_id, job.attempts, []) is False    # the answer to the old attempt
    queue.await_commitment(again, "other", {"sent": 3}, timeout=60)
    assert queue.settle_commitment(job_id, again.attempts, []) is True
    done = state(sessions, job_id)
    assert done.state == "done" and done.result == {"sent": 3, "committed": True}


def test_an_event_behind_a_gap_waits_for_the_gap_to_settle(db) -> None:
    """PostgreSQL shows event 4 before event 3's transaction commits: the cursor must not pass 3."""
    from neuropetrix.store import eventlog as events

    _, sessions = db
    with sessions.begin() as s:
        for event_id in (1, 2, 4):
            s.add(Event(id=event_id, kind="study.complete", study_uid=f"1.2.{event_id}", created_at=utcnow(),
                        payload={}))
    with sessions.begin() as s:
        assert [e.id for e in events.take_pending(s, "t", ("study.complete",))] == [1, 2]
        events.advance(s, "t", 2)
    with sessions.begin() as s:                                  # id 3 commits late: it is not skipped
        s.add(Event(id=3, kind="study.complete", study_uid="1.2.3", created_at=utcnow(), payload={}))
    with sessions.begin() as s:
        assert [e.id for e in events.take_pending(s, "t", ("study.complete",))] == [3, 4]
        events.advance(s, "t", 4)
    with sessions.begin() as s:                                  # a gap left by a rollback long ago
        s.add(Event(id=9, kind="study.complete", study_uid="1.2.9",
                    created_at=utcnow() - timedelta(seconds=events.GAP_SETTLE_SECONDS + 1), payload={}))
    with sessions.begin() as s:
        assert [e.id for e in events.take_pending(s, "t", ("study.complete",))] == [9]


def test_other_consumers_events_never_hide_ours(db) -> None:
    from neuropetrix.store import eventlog as events

    _, sessions = db
    with sessions.begin() as s:
        for i in range(45):
            s.add(Event(kind="delivery.done", study_uid="1.2.3", created_at=utcnow(), payload={}))
        s.add(Event(kind="study.complete", study_uid="1.2.3", created_at=utcnow(), payload={}))
    found = []
    for _ in range(3):                                           # each pass scans 20 × limit events
        with sessions.begin() as s:
            found += [e.kind for e in events.take_pending(s, "t", ("study.complete",), limit=2)]
    assert found == ["study.complete"]


def test_a_destination_with_a_job_in_hand_gets_no_second_lane(db) -> None:
    _, sessions = db
    queue = JobQueue(sessions, RETRY, 60)
    slow1, slow2 = add_job(sessions, "dicom:slow", index=0), add_job(sessions, "dicom:slow", index=1)
    other = add_job(sessions, "dicom:other", index=2)
    first = queue.claim("w1", ("forward",), per_destination=1)
    assert first.id == slow1
    second = queue.claim("w2", ("forward",), per_destination=1)
    assert second.id == other                                    # not slow2: dicom:slow has its lane
    assert queue.claim("w3", ("forward",), per_destination=1) is None
    queue.finish(first, "w1", {})
    assert queue.claim("w3", ("forward",), per_destination=1).id == slow2
    assert queue.claim("w4", ("forward",)) is None               # analysis lanes pass no limit; nothing left


def test_two_consumers_of_one_cursor_take_each_event_once(db) -> None:
    """Two workers on one database (`neuropetrix worker` beside `serve`, or two review watchers) read the
    same cursor: the second must wait for the first's transaction, not act on the events it already took
    (on SQLite the cursor's read used to run outside the write transaction that moved it)."""
    import time

    from neuropetrix.store import eventlog as events

    _, sessions = db
    with sessions.begin() as s:
        for i in range(6):
            s.add(Event(kind="study.complete", study_uid=f"1.2.{i}", created_at=utcnow(), payload={}))
    taken: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def consume() -> None:
        start.wait()
        try:
            for _ in range(3):
                with sessions.begin() as s:
                    pending = events.take_pending(s, "t", ("study.complete",), limit=2)
                    time.sleep(0.2)                    # the other consumer runs in this window
                    taken.extend(e.id for e in pending)
                    if pending:
                        events.advance(s, "t", pending[-1].id)
        except BaseException as exc:  # noqa: BLE001  (reported by the assertion below)
            errors.append(exc)

    threads = [threading.Thread(target=consume) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and sorted(taken) == list(range(1, 7))
