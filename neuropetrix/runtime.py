"""The node in one process: database, storage, DICOM SCP, study completion, worker and API, started
and stopped together. `neuropetrix serve` runs it; tests start it in a subprocess the same way."""
from __future__ import annotations

import logging

from neuropetrix.api.ops import Readiness
from neuropetrix.api.server import ApiServer
from neuropetrix.config.filemodes import prepare_data_dir
from neuropetrix.config.settings import Settings
from neuropetrix.engine.assembly import CompletionWatcher
from neuropetrix.engine.mpps import ProcedureSteps
from neuropetrix.engine.transforms import build
from neuropetrix.engine.transforms.deidentify import pseudonym_key
from neuropetrix.engine.worker import build_worker
from neuropetrix.node.scp.dicom import AcceptancePolicy, DicomServer, ServerLimits
from neuropetrix.store.db import make_engine, make_sessionmaker, open_database
from neuropetrix.store.files import FileStore
from neuropetrix.store.index import StudyIndex
from neuropetrix.store.ingest import Ingest
from neuropetrix.store.recovery import RunMarker, reindex_since

log = logging.getLogger("neuropetrix")


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        node = settings.node
        prepare_data_dir(node.data_dir, node.data_group, tuple(filter(None, [node.sqlite_file])))
        self.engine, self.sessions = open_database(node.db_url)
        self.files = FileStore(node.storage_dir, fsync=node.fsync)
        self.worker = build_worker(settings, self.sessions, self.files)   # checks routes and transforms first
        stale = self.files.clean_incoming()
        if stale:
            log.warning("removed %d unfinished incoming file(s) left by an earlier stop", stale)
        # The index of received instances commits without waiting for the disk: its rows can be rebuilt
        # from the files, which are durable before they are acknowledged (store/recovery.py).
        self.index_engine = make_engine(node.db_url, durable_commits=False)
        index = StudyIndex(make_sessionmaker(self.index_engine))
        self.marker = RunMarker(node.data_dir)
        since = self.marker.unclean_since()
        if since is not None:
            restored = reindex_since(self.files, index, since)
            log.warning("the last run did not stop cleanly: %d instance(s) re-indexed from storage", restored)
        self.marker.begin()
        inbound = {peer.ae_title: build(peer.transforms_in, pseudonym_key(settings))
                   for peer in settings.peers if peer.transforms_in}
        self.ingest = Ingest(self.files, index, inbound)
        policy = AcceptancePolicy(ae_title=node.ae_title,
                                  known_callers=frozenset(p.ae_title for p in settings.peers),
                                  accept_unknown_callers=node.accept_unknown_callers,
                                  check_called_ae=node.check_called_ae)
        limits = ServerLimits(max_associations=node.max_associations, acse_timeout=node.acse_timeout,
                              network_timeout=node.network_timeout, max_pdu_size=node.max_pdu_size)
        self.scp = DicomServer(node.dicom_host, node.dicom_port, policy, self.ingest, limits, node.fsync,
                               steps=ProcedureSteps(self.sessions))
        self.completion = CompletionWatcher(self.sessions, node.study_quiet_seconds)
        self.api = ApiServer(settings, self.sessions, Readiness(
            node.storage_dir, dicom_listening=lambda: self.scp.listening,
            dicom_associations=lambda: self.scp.active_associations))

    def start(self) -> None:
        self.completion.start()
        self.worker.start()
        self.api.start()        # before the SCP, so that an open DICOM port means the node is all up
        self.scp.start()

    def stop(self) -> None:
        self.api.stop()
        self.scp.stop()
        self.completion.stop()
        self.worker.stop()
        self.engine.dispose()
        self.index_engine.dispose()
        self.marker.end()
