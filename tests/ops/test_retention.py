"""Retention: a study older than the rule is pruned — files and index rows both — only once every job
of it is done (a forward waiting for the PACS's storage commitment is not); a parked job, an
unsigned review or a recent follow-up of the same patient keeps it; `storage prune --dry-run` lists
without deleting; the prune runs as a durable job of the engine, evented and audited."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
import yaml
from sqlalchemy import select, update

from neuropetrix.config.loader import ConfigError, parse_settings
from neuropetrix.engine import retention
from neuropetrix.engine.executor import JobRunner, done_event
from neuropetrix.engine.jobs import JobQueue, new_job
from neuropetrix.engine.result_store import ResultStore
from neuropetrix.store.audit import AuditTrail
from neuropetrix.store.db import open_database, utcnow
from neuropetrix.store.files import FileStore, relative_path
from neuropetrix.store.index import InstanceRecord, StudyIndex
from neuropetrix.store.jobs_models import COMMITTING, DONE, FAILED, Job
from neuropetrix.store.models import Event, Instance, Study
from neuropetrix.store.reviews import Review
from tests.conftest import storescu
from tests.engine.conftest import wait_for
from tests.support.nodeproc import run_cli, running_node
from tests.support.synthetic import StudySpec, write_petct_study

CT = "1.2.840.10008.5.1.4.1.1.2"


class Site:
    def __init__(self, tmp_path, **rules) -> None:
        config = {"node": {"data_dir": str(tmp_path / "var")},
                  "storage": {"retention": {"images_days": 30, "results_days": 60, **rules}}}
        self.config_path = tmp_path / "node.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.settings = parse_settings(yaml.safe_dump(config), "test", environ={})
        self.settings.node.storage_dir.mkdir(parents=True)
        _, self.sessions = open_database(self.settings.node.db_url)
        self.files = FileStore(self.settings.node.storage_dir, fsync=False)
        self.results = ResultStore(self.settings.node.data_dir / "results")
        self.index = StudyIndex(self.sessions)
        self.queue = JobQueue(self.sessions, self.settings.engine.retry, 60)

    def study(self, uid: str, days_old: float, patient: str = "P1", instances: int = 2, results: bool = False) -> None:
        for n in range(instances):
            rel = relative_path(uid, f"{uid}.1", f"{uid}.1.{n}")
            path = self.files.path_of(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\0" * 128 + b"DICM" + bytes(100))
            self.index.add(InstanceRecord(CT, f"{uid}.1.{n}", uid, f"{uid}.1", "1.2.840.10008.1.2.1", rel, 232,
                                          patient_id=patient, modality="CT"))
        at = utcnow() - timedelta(days=days_old)
        with self.sessions.begin() as s:
            s.execute(update(Study).where(Study.study_uid == uid).values(
                state="complete", first_received_at=at, last_received_at=at, completed_at=at))
        if results:
            folder = self.results.folder(uid)
            folder.mkdir(parents=True)
            (folder / "analysis.json").write_text("{}")

    def job(self, uid: str, state: str, kind: str = "forward") -> int:
        with self.sessions.begin() as s:
            job = new_job(kind, uid, "r", 0, "dicom:pacs", 5)
            job.state = state
            s.add(job)
            s.flush()
            return job.id

    def run_prunes(self) -> list[dict]:
        """What the engine's delivery lane does with the queued prune jobs."""
        runner, out = JobRunner(self.settings, self.sessions, self.files, self.results), []
        while (job := self.queue.claim("test", (retention.KIND,))) is not None:
            result = runner.run(job, stop=None)
            assert self.queue.finish(job, "test", result, done_event(job.kind))
            out.append(result)
        return out

    def rows_and_files(self, uid: str) -> tuple[int, int, int]:
        """(study rows, instance rows, instance files) of study `uid`."""
        with self.sessions() as s:
            studies = len(s.scalars(select(Study.id).where(Study.study_uid == uid)).all())
            rows = len(s.scalars(select(Instance.id).where(Instance.path.like(f"{uid}/%"))).all())
        folder = self.files.path_of(uid)
        return studies, rows, len(list(folder.rglob("*.dcm"))) if folder.exists() else 0

    def decisions(self) -> dict[tuple[str, str], str | None]:
        with self.sessions() as s:
            return {(d.study_uid, d.what): d.kept_because
                    for d in retention.assess(s, self.settings.storage.retention, self.results, utcnow())}


def test_pruned_only_once_its_deliveries_are_committed(tmp_path) -> None:
    site = Site(tmp_path)
    site.study("1.2.3.1", days_old=40)
    site.job("1.2.3.1", DONE)
    waiting = site.job("1.2.3.1", COMMITTING)            # stored at the PACS, its commitment not yet answered
    assert site.decisions() == {("1.2.3.1", "images"): f"job {waiting} (forward) is committing"}
    assert retention.make_jobs(site.sessions, site.settings.storage.retention, site.results, utcnow(), 5) == []
    assert site.rows_and_files("1.2.3.1") == (1, 2, 2)

    with site.sessions.begin() as s:                       # the PACS committed
        s.execute(update(Job).where(Job.id == waiting).values(state=DONE))
    [job] = retention.make_jobs(site.sessions, site.settings.storage.retention, site.results, utcnow(), 5)
    assert retention.make_jobs(site.sessions, site.settings.storage.retention, site.results, utcnow(), 5) == []
    assert site.run_prunes() == [{"pruned": True, "what": "images", "instances": 2}]
    assert site.rows_and_files("1.2.3.1") == (0, 0, 0)
    with site.sessions() as s:
        assert s.scalar(select(Job.state).where(Job.id == job.id)) == DONE
        [event] = s.scalars(select(Event).where(Event.kind == "study.pruned")).all()
        assert event.study_uid == "1.2.3.1" and event.payload == {"what": "images", "instances": 2}
    [audit] = AuditTrail(site.sessions).query(action="prune")
    assert audit["study_uid"] == "1.2.3.1" and audit["user"] == "NEUROPETRIX" and audit["outcome"] == "success"


def test_what_keeps_a_study(tmp_path) -> None:
    site = Site(tmp_path, prior_days=365)
    site.study("1.2.3.2", days_old=40, patient="P2")
    parked = site.job("1.2.3.2", FAILED)
    site.study("1.2.3.3", days_old=40, patient="P3")
    with site.sessions.begin() as s:
        s.add(Review(study_uid="1.2.3.3", status="preliminary", version=1, updated_at=utcnow()))
    site.study("1.2.3.4", days_old=300, patient="P4")       # baseline of …
    site.study("1.2.3.5", days_old=45, patient="P4")        # … a follow-up received 45 days ago
    site.study("1.2.3.6", days_old=10, patient="P6")        # young
    site.study("1.2.3.7", days_old=90, patient="P7", results=True)
    assert site.decisions() == {
        ("1.2.3.2", "images"): f"job {parked} (forward) parked as failed: an operator settles it first",
        ("1.2.3.3", "images"): "review not signed",
        ("1.2.3.4", "images"): "prior of study 1.2.3.5 received within 365 days",
        ("1.2.3.5", "images"): None,
        ("1.2.3.7", "images"): None, ("1.2.3.7", "results"): None}
    retention.make_jobs(site.sessions, site.settings.storage.retention, site.results, utcnow(), 5)
    results = site.run_prunes()
    assert sorted(r["what"] for r in results) == ["images", "images", "results"]
    for kept in ("1.2.3.2", "1.2.3.3", "1.2.3.4", "1.2.3.6"):
        assert site.rows_and_files(kept) == (1, 2, 2)
    assert site.rows_and_files("1.2.3.7") == (0, 0, 0) and not site.results.folder("1.2.3.7").exists()


def test_results_outlive_images(tmp_path) -> None:
    """Images go after 30 days; the results, kept 60, stay readable through the study's row."""
    site = Site(tmp_path)
    site.study("1.2.3.11", days_old=40, results=True)
    retention.make_jobs(site.sessions, site.settings.storage.retention, site.results, utcnow(), 5)
    assert site.run_prunes() == [{"pruned": True, "what": "images", "instances": 2}]
    assert site.rows_and_files("1.2.3.11") == (1, 0, 0) and site.results.file("1.2.3.11", "analysis.json").is_file()
    with site.sessions() as s:
        assert s.scalar(select(Study.state).where(Study.study_uid == "1.2.3.11")) == retention.PRUNED
    assert retention.make_jobs(site.sessions, site.settings.storage.retention, site.results, utcnow(), 5) == []
    with site.sessions.begin() as s:
        s.execute(update(Study).where(Study.study_uid == "1.2.3.11").values(
            last_received_at=utcnow() - timedelta(days=61)))
    retention.make_jobs(site.sessions, site.settings.storage.retention, site.results, utcnow(), 5)
    assert site.run_prunes() == [{"pruned": True, "what": "results"}]
    assert site.rows_and_files("1.2.3.11") == (0, 0, 0) and not site.results.folder("1.2.3.11").exists()


def test_the_job_checks_again_before_deleting(tmp_path) -> None:
    """A study that got a job between the sweep and the prune is kept by the prune job itself."""
    site = Site(tmp_path)
    site.study("1.2.3.8", days_old=40)
    retention.make_jobs(site.sessions, site.settings.storage.retention, site.results, utcnow(), 5)
    blocking = site.job("1.2.3.8", "queued")
    assert site.run_prunes() == [{"pruned": False, "why": f"job {blocking} (forward) is queued"}]
    assert site.rows_and_files("1.2.3.8") == (1, 2, 2)


def test_dry_run_lists_without_deleting(tmp_path) -> None:
    site = Site(tmp_path)
    site.study("1.2.3.9", days_old=40)
    site.study("1.2.3.10", days_old=40, patient="P10")
    parked = site.job("1.2.3.10", FAILED)
    dry = run_cli("storage", "prune", "--dry-run", "--json", "--config", str(site.config_path))
    assert dry.returncode == 0, dry.stderr
    listed = json.loads(dry.stdout)
    assert listed["jobs"] == [] and {(d["study_uid"], d["prune"], d["kept_because"]) for d in listed["decisions"]} == {
        ("1.2.3.9", True, None),
        ("1.2.3.10", False, f"job {parked} (forward) parked as failed: an operator settles it first")}
    assert site.rows_and_files("1.2.3.9") == (1, 2, 2)
    with site.sessions() as s:
        assert s.scalars(select(Job).where(Job.kind == retention.KIND)).all() == []
    text = run_cli("storage", "prune", "--dry-run", "--config", str(site.config_path))
    assert "1 to prune, 1 kept (dry run: nothing deleted)" in text.stdout
    queued = run_cli("storage", "prune", "--config", str(site.config_path))
    assert "1 prune job(s) queued" in queued.stdout, queued.stderr
    assert site.run_prunes()[0]["pruned"] is True
    assert site.rows_and_files("1.2.3.9") == (0, 0, 0)


def test_retention_settings_refuse_unknown_keys(tmp_path) -> None:
    with pytest.raises(ConfigError, match="storage.retention"):
        parse_settings(yaml.safe_dump({"storage": {"retention": {"image_days": 3}}}), "test", environ={})


def test_a_running_node_prunes_by_itself(tmp_path) -> None:
    """The engine's sweep in a running node: a study received, completed and older than the rule is
    pruned by a prune job of the delivery lanes; the study list no longer has it."""
    spec, files = write_petct_study(tmp_path / "study", StudySpec(ct_slices=2, pet_slices=2, ct_matrix=64,
                                                                  pet_matrix=32))
    rules = {"images_days": 3 / 86400, "prior_days": 0, "sweep_seconds": 0.5}     # 3 seconds
    with running_node(tmp_path, {"storage": {"retention": rules},
                                 "engine": {"poll_seconds": 0.1, "analysis_workers": 0}}) as node:
        assert storescu(node.dicom_port, *files).returncode == 0
        folder = node.data_dir / "storage" / spec.study_uid
        assert len(list(folder.rglob("*.dcm"))) == len(files)
        wait_for("the study to be pruned", lambda: not folder.exists(), node, timeout=60)
        listed = json.loads(node.cli("studies", "--json").stdout)
        assert spec.study_uid not in [st.get("study_uid") for st in listed]
        jobs = json.loads(node.cli("jobs", "--json").stdout)
        assert [(j["kind"], j["state"]) for j in jobs] == [("prune", "done")]
        log = node.log_text()
    assert f"retention: images of study {spec.study_uid} deleted ({len(files)} instance(s))" in log


def test_a_backup_forgets_what_retention_deleted(tmp_path) -> None:
    """A nightly backup into the same folder: what was pruned since is deleted from it too, so a
    restore into an empty node does not bring it back (nor route it again); a kept study stays."""
    site = Site(tmp_path)
    site.study("1.2.3.20", days_old=40, patient="P20")
    site.study("1.2.3.21", days_old=5, patient="P21")
    site.study("1.2.3.22", days_old=90, patient="P22", results=True)
    backup = tmp_path / "backup"
    first = run_cli("backup", str(backup), "--config", str(site.config_path))
    assert first.returncode == 0, first.stderr
    assert len(list((backup / "storage").rglob("*.dcm"))) == 6 and (backup / "results" / "1.2.3.22").is_dir()

    retention.make_jobs(site.sessions, site.settings.storage.retention, site.results, utcnow(), 5)
    assert sorted(r["what"] for r in site.run_prunes()) == ["images", "images", "results"]
    second = run_cli("backup", str(backup), "--config", str(site.config_path))
    assert second.returncode == 0, second.stderr
    assert "5 pruned file(s) deleted from it" in second.stdout
    assert json.loads((backup / "manifest.json").read_text())["pruned"] == {"storage": 4, "results": 1}
    assert sorted(p.parent.parent.name for p in (backup / "storage").rglob("*.dcm")) == ["1.2.3.21"] * 2
    assert not (backup / "storage" / "1.2.3.20").exists() and not (backup / "results" / "1.2.3.22").exists()

    restored = tmp_path / "restored.yaml"
    restored.write_text(yaml.safe_dump({"node": {"data_dir": str(tmp_path / "restored")}}))
    result = run_cli("restore", str(backup), "--config", str(restored))
    assert result.returncode == 0, result.stderr
    assert "(0 re-indexed from storage)" in result.stdout
    _, sessions = open_database(f"sqlite:///{tmp_path / 'restored' / 'neuropetrix.db'}")
    with sessions() as s:
        assert sorted(p.split("/")[0] for p in s.scalars(select(Instance.path))) == ["1.2.3.21"] * 2
