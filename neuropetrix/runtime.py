"""The node in one process: database, storage, DICOM SCP, study completion, worker and API, started
and stopped together. `neuropetrix serve` runs it; tests start it in a subprocess the same way."""
from __future__ import annotations

import logging

from pynetdicom.sop_class import ModalityWorklistInformationFind

from neuropetrix.api.ops import Readiness
from neuropetrix.api.server import ApiServer
from neuropetrix.config.filemodes import prepare_data_dir
from neuropetrix.config.settings import Settings
from neuropetrix.engine.assembly import CompletionWatcher
from neuropetrix.engine.mpps import ProcedureSteps
from neuropetrix.engine.orders import Intake, OrderTracker
from neuropetrix.engine.query_retrieve import providers as query_retrieve_providers
from neuropetrix.engine.query_retrieve import retrieve_providers
from neuropetrix.engine.transforms import build
from neuropetrix.engine.transforms.deidentify import pseudonym_key
from neuropetrix.engine.worker import build_worker
from neuropetrix.engine.worklist import Worklist
from neuropetrix.node.scp.find import FindProvider
from neuropetrix.node.scp.mllp_listener import MllpListener
from neuropetrix.node.scp.policy import AcceptancePolicy, ServerLimits
from neuropetrix.node.scp.server import DicomServer, raise_open_file_limit
from neuropetrix.node.tls import server_context
from neuropetrix.store.audit import DicomAudit, audit_trail
from neuropetrix.store.db import make_engine, make_sessionmaker, open_database
from neuropetrix.store.files import FileStore
from neuropetrix.store.index import StudyIndex
from neuropetrix.store.ingest import Ingest
from neuropetrix.store.recovery import RunMarker, reindex_since
from neuropetrix.store.space import Watermark

log = logging.getLogger("neuropetrix")


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        node = settings.node
        prepare_data_dir(node.data_dir, node.data_group, tuple(filter(None, [node.sqlite_file])))
        self.engine, self.sessions = open_database(node.db_url)
        self.files = FileStore(node.storage_dir, fsync=node.fsync)
        listen = settings.hbys.mllp_listen
        # orders come from the HBYS only when the listener is on; then studies are reconciled with them
        self.orders = OrderTracker(self.sessions, settings.hbys, settings.engine.poll_seconds,
                                   retry=settings.engine.retry) if listen.enabled else None
        self.worker = build_worker(settings, self.sessions, self.files,   # checks routes and transforms first
                                   gate=self.orders.release if self.orders else None)
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
        inbound = {peer.ae_title: build(peer.transforms_in, pseudonym_key(settings))
                   for peer in settings.peers if peer.transforms_in}
        self.ingest = Ingest(self.files, index, inbound)
        policy = AcceptancePolicy(ae_title=node.ae_title,
                                  known_callers=frozenset(p.ae_title for p in settings.peers),
                                  accept_unknown_callers=node.accept_unknown_callers,
                                  check_called_ae=node.check_called_ae,
                                  space=Watermark(node.storage_dir, node.min_free_mb).refusal)
        # C-FIND providers by SOP Class UID: Query/Retrieve over the index, the engine's worklist
        find_providers: dict[str, FindProvider] = dict(query_retrieve_providers(self.sessions, node.ae_title,
                                                                                node.data_dir / "results"))
        if listen.enabled:          # the worklist is made of the HBYS's orders
            find_providers[ModalityWorklistInformationFind] = Worklist(self.sessions, settings.hbys.worklist_charset,
                                                              settings.hbys.worklist_charsets)
        tls = node.tls
        self.scp_audit = DicomAudit(audit_trail(settings, self.sessions))
        # the plain DICOM port and the TLS one (node.tls.port) serve alike: one policy, one store
        ports = ([(node.dicom_port, None)] if node.plain_dicom else []) + \
            ([(tls.port, server_context(tls))] if tls is not None and tls.port is not None else [])
        self.scps = [DicomServer(node.dicom_host, port, policy, self.ingest, ServerLimits.of(node),
                                 steps=ProcedureSteps(self.sessions), find_providers=find_providers,
                                 retrieve_providers=retrieve_providers(self.sessions, node.storage_dir,
                                                                       node.data_dir / "results"),
                                 move_destinations={p.ae_title: p for p in reversed(settings.peers)},
                                 ssl_context=context, audit=self.scp_audit, move_tls=tls) for port, context in ports]
        self.completion = CompletionWatcher(self.sessions, node.study_quiet_seconds)
        self.mllp = None
        if listen.enabled:
            self.mllp = MllpListener(listen.host, listen.port, Intake(self.sessions, settings.hbys).receive,
                                     listen.allowed_callers, listen.max_frame_bytes, listen.idle_timeout,
                                     ssl_context=server_context(tls) if listen.tls and tls else None)
        self.api = ApiServer(settings, self.sessions, Readiness(
            node.storage_dir, dicom_listening=lambda: all(scp.listening for scp in self.scps),
            dicom_associations=lambda: sum(scp.active_associations for scp in self.scps)),
            ssl_context=server_context(tls) if settings.api.https and tls else None)

    def start(self) -> None:
        raise_open_file_limit()
        self.completion.start()
        self.worker.start()
        if self.orders is not None:
            self.orders.start()
        self.api.start()        # before the SCP, so that an open DICOM port means the node is all up
        if self.mllp is not None:
            self.mllp.start()
        self.marker.begin()     # from here on instances may arrive: a stop without `end` is unclean
        try:
            for scp in self.scps:
                scp.start()
        except BaseException:
            self.marker.end()   # nothing was received: the next start need not look for lost rows
            raise

    def stop(self) -> None:
        self.api.stop()
        if self.mllp is not None:
            self.mllp.stop()
        for scp in self.scps:
            scp.stop()
        if self.orders is not None:
            self.orders.stop()
        self.completion.stop()
        self.worker.stop()
        self.engine.dispose()
        self.index_engine.dispose()
        if self.ingest.unindexed:   # acknowledged, stored, row not written: the next start re-indexes them
            log.error("%d stored instance(s) could not be indexed; keeping the run marker so that the next "
                      "start re-indexes them from storage", self.ingest.unindexed)
        else:
            self.marker.end()
