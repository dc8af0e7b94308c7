"""Notifications on tests/api's API environment: a local SMTP server (aiosmtpd), a local SMS gateway,
contacts for the accounts (one per role, named after it) and a `notification` event as a route's
notify action records it."""
from __future__ import annotations

import asyncio
import email
import email.policy
import ipaddress
import ssl
import threading
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from neuropetrix.api import contacts
from neuropetrix.config.settings import NotifySettings
from neuropetrix.engine.notifications import notify_params
from neuropetrix.engine.worker import build_worker
from neuropetrix.store.files import FileStore
from neuropetrix.store.notify_models import Notification
from tests.api.conftest import accounts_db, make_env  # noqa: F401  (fixtures)
from tests.support.nodeproc import free_port


class Inbox:
    """aiosmtpd handler: keeps every message; refuses RCPT for addresses in `refuse` with 550."""

    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, EmailMessage]] = []
        self.refuse: set[str] = set()
        self.arrived = threading.Event()

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append((envelope, email.message_from_bytes(envelope.content, policy=email.policy.default)))
        self.arrived.set()
        return "250 Message accepted"


@pytest.fixture
def smtp_server():
    """start(port=None, **aiosmtpd SMTP options) → (Inbox, port); every server stopped at the end."""
    started: list[Controller] = []

    def start(port: int | None = None, **options) -> tuple[Inbox, int]:
        inbox = Inbox()
        controller = Controller(inbox, hostname="127.0.0.1", port=port or free_port(), **options)
        controller.start()
        started.append(controller)
        return inbox, controller.port
    yield start
    for controller in started:
        controller.stop()


def set_contact(env, username: str, **fields) -> None:
    with env.sessions.begin() as s:
        contacts.set_contact_of(s, username, **fields)


def notifications(env) -> list[Notification]:
    with env.sessions() as s:
        return list(s.query(Notification).order_by(Notification.id))


async def until(predicate, timeout: float = 30) -> None:
    async def loop() -> None:
        while not predicate():
            await asyncio.sleep(0.05)
    await asyncio.wait_for(loop(), timeout)


@pytest.fixture
def env(make_env):  # noqa: F811
    """tests/api's API environment, no notify section."""
    return make_env()


@pytest.fixture
def running():
    """start(env) → the env's engine worker, its notification cursor set before any test event."""
    workers = []

    def start(env):
        worker = build_worker(env.settings, env.sessions, FileStore(env.settings.node.storage_dir))
        worker.notifications.run_once()
        worker.start()
        workers.append(worker)
        return worker
    yield start
    for w in workers:
        w.stop(grace=5)


@pytest.fixture
def notify_env(make_env):  # noqa: F811
    """make_env(push=…) with a `notify:` section (parsed like the config file's)."""
    def make(notify: dict, push: dict | None = None):
        env = make_env(push)
        env.settings = env.settings.model_copy(update={"notify": NotifySettings.model_validate(notify)})
        return env
    return make


def notify_event(env, study_uid: str, route: str = "urgent-finding", **action) -> int:
    """The `notification` event a route's `{notify: {...}}` action records (engine/executor.py)."""
    params = notify_params(action) if action else {"recipients": ["physician"]}
    return env.add_event("notification", study_uid, **params, job=1, route=route, analysed=True)


def hospital_ca(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA (its certificate written to folder/ca.pem) and a server context with a certificate it
    signed for 127.0.0.1, as a hospital's internal mail server has."""
    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("Hastane CA")).issuer_name(name("Hastane CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - timedelta(hours=1))
          .not_valid_after(now + timedelta(days=1)).add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(name("mail.hastane.local")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(ca_key, hashes.SHA256()))
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "server.pem", folder / "server.key")
    return folder / "ca.pem", context
