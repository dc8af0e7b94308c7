"""Notifications on tests/api's API environment: a local SMTP server (aiosmtpd), a local SMS gateway,
contacts for the accounts (one per role, named after it) and a `notification` event as a route's
notify action records it."""
from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from neuropetrix.api import contacts
from neuropetrix.config.settings import NotifySettings
from neuropetrix.engine.notifications import notify_params
from neuropetrix.engine.worker import build_worker
from neuropetrix.store.files import FileStore
from neuropetrix.store.notify_models import Notification
from tests.api.conftest import accounts_db, make_env  # noqa: F401  (fixtures)
from tests.nodeproc import free_port


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
