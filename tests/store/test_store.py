"""The store on its own: UID-safe paths, the index's idempotence and re-opening, migrations."""
from __future__ import annotations

from datetime import timedelta

import pydicom
import pytest
from sqlalchemy import inspect, select

from neuropetrix.engine.assembly import CompletionWatcher
from neuropetrix.store import migrate
from neuropetrix.store.db import open_database, utcnow
from neuropetrix.store.files import FileStore, InvalidUID, check_uid, relative_path
from neuropetrix.store.index import InstanceRecord, StudyIndex
from neuropetrix.store.models import Event, Study
from tests.support import pg


@pytest.mark.parametrize("bad", ["", "1", "../1.2", "1.2.03", "1.2.3.", "1..2", "1.2/3", "a.b", "1.2." + "3" * 70])
def test_not_a_uid_never_becomes_a_path(bad):
    with pytest.raises(InvalidUID):
        relative_path("1.2.3", bad, "1.2.4")


def test_valid_uid_paths():
    assert check_uid("1.2.840.10008.5.1.4.1.1.128\0", "X") == "1.2.840.10008.5.1.4.1.1.128"
    assert relative_path("1.2", "1.2.0", "2.25.1") == "1.2/1.2.0/2.25.1.dcm"


def record(sop: str, study: str = "1.2.3", series: str = "1.2.3.1") -> InstanceRecord:
    return InstanceRecord(sop_class_uid="1.2.840.10008.5.1.4.1.1.128", sop_instance_uid=sop, study_uid=study,
                          series_uid=series, transfer_syntax_uid="1.2.840.10008.1.2.1", path=f"{sop}.dcm",
                          size_bytes=10, patient_id="10000000146", modality="PT")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path_factory):
    """The same store code on the embedded default and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'db.sqlite'}"
        return
    if not pg.available():
        pytest.skip("PostgreSQL server binaries are not installed (Debian package postgresql)")
    with pg.postgres_cluster() as url:
        yield url


def test_index_is_idempotent_and_reopens_completed_studies(database_url):
    engine, sessions = open_database(database_url)
    index = StudyIndex(sessions)
    assert index.add(record("1.2.3.1.1")) is True
    assert index.add(record("1.2.3.1.1")) is False
    watcher = CompletionWatcher(sessions, quiet_seconds=30)
    assert watcher.sweep() == []                                  # not quiet yet
    assert watcher.sweep(utcnow() + timedelta(seconds=31)) == ["1.2.3"]
    assert watcher.sweep(utcnow() + timedelta(seconds=62)) == []  # completes once
    assert index.add(record("1.2.3.1.2")) is True                 # more arrives: re-opened
    with sessions() as s:
        assert s.scalar(select(Study.state)) == "receiving"
    assert watcher.sweep(utcnow() + timedelta(seconds=31)) == ["1.2.3"]
    with sessions() as s:
        kinds = list(s.scalars(select(Event.kind).order_by(Event.id)))
        complete = s.scalars(select(Event).where(Event.kind == "study.complete")).all()
    assert kinds == ["study.received", "study.complete", "study.reopened", "study.complete"]
    assert complete[-1].payload == {"modalities": ["PT"], "series": 1, "instances": 2, "reason": "quiet"}
    engine.dispose()


def test_migrations_create_the_schema_and_are_repeatable(database_url):
    engine, _ = open_database(database_url)
    assert {"patients", "studies", "series", "instances", "events"} <= set(inspect(engine).get_table_names())
    before = migrate.current_revision(engine)
    assert migrate.upgrade(engine) == before
    assert before and set(before.split(", ")) == set(migrate.head_revisions())


def test_leftover_incoming_files_are_cleaned(tmp_path):
    store = FileStore(tmp_path / "storage")
    (store.incoming / "abc.part").write_bytes(b"half")
    assert store.clean_incoming() == 1
    assert not list(store.incoming.iterdir())


def test_header_read_from_memory_matches_the_file_and_falls_back_when_cut(small_study, tmp_path):
    from neuropetrix.store.ingest import read_header
    from tests.support.dicomfiles import dataset_bytes
    for f in small_study[1][:1] + small_study[1][-1:]:
        ts = pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID
        whole = read_header(f, b"", ts)
        encoded = dataset_bytes(f)
        from_memory = read_header(tmp_path / "absent.dcm", encoded[:65536], ts)
        assert from_memory.SOPInstanceUID == whole.SOPInstanceUID
        assert from_memory.PatientName == whole.PatientName and from_memory.SeriesNumber == whole.SeriesNumber
        cut = encoded.index(b"\x20\x00\x0d\x00")   # inside the header, before StudyInstanceUID ends
        assert read_header(f, encoded[:cut + 5], ts).StudyInstanceUID == whole.StudyInstanceUID
