"""`neuropetrix doctor`: check the configuration against the world, one line per check with what to fix.

A configuration can be valid and still not work: a PACS that does not know our AE title, an HBYS port
nobody listens on, a data folder the service user cannot write. Each check here tries the real thing
(C-ECHO, a TCP connection, GET /metadata, a file written and removed, the schema's revision) so that
an operator sees every problem at once instead of one failed job at a time. Exit status 1 when a
check fails; warnings (a scanner that only sends to us and is switched off) do not count.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pynetdicom.sop_class import Verification

from neuropetrix.cli import add_config_option, settings_from
from neuropetrix.config.secrets import KEY_FILES
from neuropetrix.config.settings import Peer, Settings, TlsSettings
from neuropetrix.engine.routes.rules import compile_routes
from neuropetrix.node.entity import node_ae
from neuropetrix.node.scp.status import SUCCESS
from neuropetrix.node.tls import peer_tls_args
from neuropetrix.store import migrate
from neuropetrix.store.db import make_engine

OK, WARN, FAIL = "ok", "warn", "FAIL"
MIN_FREE_BYTES = 2 * 1024 ** 3       # below this a study or two fills the disk and ingest stops


@dataclass(frozen=True)
class Check:
    status: str                       # ok | warn | FAIL
    name: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:<4}  {self.name}: {self.detail}" + (f" → {self.fix}" if self.fix else "")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check peers, HBYS, data folder and database; say what to fix")
    add_config_option(p)
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each peer (default 5)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)   # its connection errors are our lines
    checks = [check_data_dir(settings.node.data_dir), *check_key_files(settings.node.data_dir),
              check_database(settings)]
    used = _destinations(settings, checks)
    with ThreadPoolExecutor(max_workers=8) as pool:     # unreachable hosts each take the whole timeout
        network = [pool.submit(check_peer, settings.node.ae_title, p, f"dicom:{p.name}" in used, args.timeout,
                               settings.node.tls) for p in settings.peers]
        network.append(pool.submit(check_mllp, settings, "hl7:hbys" in used, args.timeout))
        network.append(pool.submit(check_fhir, settings, "fhir:hbys" in used, args.timeout))
        checks += [f.result() for f in network]
    for c in checks:
        print(c.line())
    failed = [c for c in checks if c.status == FAIL]
    print(f"{len(checks)} checks: {len(failed)} failed, {sum(c.status == WARN for c in checks)} warning(s)")
    return 1 if failed else 0


def _destinations(settings: Settings, checks: list[Check]) -> set[str]:
    """The destinations the routes send to (dicom:<peer>, hl7:hbys, fhir:hbys); a route that does not
    compile is a failed check of its own."""
    try:
        rules = compile_routes(settings)
    except Exception as exc:  # noqa: BLE001  RouteError, or the pseudonym key file cannot be made
        checks.append(Check(FAIL, "routes", str(exc), "fix the routes: section (`neuropetrix routes test`)"))
        return set()
    checks.append(Check(OK, "routes", f"{len(rules)} rule(s) compile"))
    return {a.destination for r in rules for a in r.actions}


def check_data_dir(data_dir: Path) -> Check:
    name = f"data folder {data_dir}"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".doctor-{os.getpid()}"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        return Check(FAIL, name, f"not writable: {exc.strerror or exc}",
                     "make it writable by the user the node runs as (chown/chmod), or change node.data_dir")
    usage = shutil.disk_usage(data_dir)
    free = f"{usage.free / 1024 ** 3:.1f} GiB free of {usage.total / 1024 ** 3:.1f} GiB"
    if usage.free < MIN_FREE_BYTES:
        return Check(FAIL, name, f"writable, only {free}",
                     "free space (retention, a larger disk) before scanners are refused as out of resources")
    return Check(OK, name, f"writable, {free}")


def check_key_files(data_dir: Path) -> list[Check]:
    """The generated secrets (config/secrets.py) must be readable by the node's user only: the node
    refuses to start otherwise."""
    out = []
    for path in sorted(data_dir.glob(KEY_FILES)):
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            out.append(Check(FAIL, f"key file {path}", f"mode {mode:o}: readable by others", f"chmod 600 {path}"))
        else:
            out.append(Check(OK, f"key file {path}", f"mode {mode:o}"))
    return out


def check_database(settings: Settings) -> Check:
    url = settings.node.db_url
    shown = url.split("@")[-1] if "@" in url else url          # no password in the output
    try:
        engine = make_engine(url)
        try:
            current = migrate.current_revision(engine)
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001  whatever the driver raises is the answer to report
        return Check(FAIL, "database", f"{shown} unreachable: {type(exc).__name__}: {str(exc)[:160]}",
                     "check node.database_url and that the database server runs")
    heads = ", ".join(migrate.head_revisions())
    if current != heads:
        return Check(FAIL, "database", f"{shown} at revision {current or 'empty'}, the code needs {heads}",
                     "run `neuropetrix db upgrade` (after `neuropetrix backup`)")
    return Check(OK, "database", f"{shown} at revision {current}")


def _connect_error(host: str, port: int, timeout: float) -> str | None:
    """Why a TCP connection to host:port fails, or None when it opens."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def check_peer(our_ae: str, peer: Peer, destination: bool, timeout: float, tls: TlsSettings | None = None) -> Check:
    name = f"peer {peer.name} ({peer.ae_title}@{peer.host}:{peer.port})"
    # a scanner that only sends to us may be switched off; a destination that does not answer is a failure
    bad = FAIL if destination else WARN
    role = "a route forwards to it" if destination else "no route forwards to it"
    error = _connect_error(peer.host, peer.port, timeout)
    if error is not None:
        return Check(bad, name, f"does not answer: {error} ({role})",
                     "check the peer's host and port in peers:, that it runs, and the firewall")
    ae = node_ae(our_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=peer_tls_args(peer, tls))
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "aborted or did not negotiate"
        return Check(bad, name, f"{why} ({role})",
                     f"the peer must know our AE title {our_ae} and its own must be {peer.ae_title}")
    try:
        status = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    code = getattr(status, "Status", None)
    if code != SUCCESS:
        return Check(bad, name, "no C-ECHO answer" if code is None else f"C-ECHO status 0x{code:04X}",
                     "the peer accepts associations but not verification: ask its administrator")
    return Check(OK, name, f"answers C-ECHO ({role})")


def check_mllp(settings: Settings, used: bool, timeout: float) -> Check:
    mllp = settings.hbys.mllp
    name = f"HBYS MLLP {mllp.host}:{mllp.port}"
    if not used:
        return Check(OK, name, "not checked: no route sends HL7 (hl7: hbys)")
    error = _connect_error(mllp.host, mllp.port, timeout)
    if error is not None:
        return Check(FAIL, name, f"does not accept connections: {error}",
                     "check hbys.mllp host and port with the HBYS vendor, and the firewall")
    return Check(OK, name, "accepts connections")


def check_fhir(settings: Settings, used: bool, timeout: float) -> Check:
    fhir = settings.hbys.fhir
    url = fhir.base_url.rstrip("/") + "/metadata"
    name = f"FHIR {url}"
    if not used:
        return Check(OK, name, "not checked: no route sends FHIR (fhir: hbys)")
    headers = {"Accept": "application/fhir+json"}
    if fhir.token:
        headers["Authorization"] = f"Bearer {fhir.token}"
    fix = "check hbys.fhir.base_url (it ends before /metadata) and hbys.fhir.token"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return Check(FAIL, name, f"HTTP {exc.code} {exc.reason}", fix)
    except (urllib.error.URLError, OSError) as exc:
        return Check(FAIL, name, f"unreachable: {getattr(exc, 'reason', exc)}", fix)
    except ValueError:
        return Check(FAIL, name, "answered, but not with JSON", fix)
    kind = body.get("resourceType") if isinstance(body, dict) else None
    if kind != "CapabilityStatement":
        return Check(FAIL, name, f"answered a {kind or 'non-FHIR document'}, not a CapabilityStatement", fix)
    return Check(OK, name, f"answers its CapabilityStatement (FHIR {body.get('fhirVersion', '?')})")
