"""The HBYS intake on a fresh database: the real MLLP listener with engine/orders.py's Intake behind
it, and python-hl7's MLLP client (a library other than ours) as the HBYS that sends."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import hl7
import pytest
from hl7.client import MLLPClient
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.config.settings import HbysSettings, MllpIn
from neuropetrix.engine.orders import Intake
from neuropetrix.node.scp.mllp_listener import MllpListener
from neuropetrix.store.db import open_database
from tests.api.conftest import accounts_db, env, make_env  # noqa: F401  (fixtures for the API tests)
from tests.engine.conftest import postgres_server  # noqa: F401  (fixture)
from tests.engine.test_jobs import db_url  # noqa: F401  (fixture: SQLite and PostgreSQL)
from tests.support.nodeproc import free_port


@dataclass
class Hbys:
    port: int
    sessions: sessionmaker[Session]
    listener: MllpListener

    def send(self, raw: bytes) -> hl7.Message:
        """Send one message over a new connection; the ACK as python-hl7 parses it."""
        with MLLPClient("127.0.0.1", self.port) as client:
            return parse_ack(client.send_message(raw))


def parse_ack(framed: bytes) -> hl7.Message:
    assert framed.startswith(b"\x0b") and framed.endswith(b"\x1c\x0d"), framed[:40]
    return hl7.parse(framed[1:-2].decode("utf-8", "replace"))


def ack_of(ack: hl7.Message) -> tuple[str, str, str]:
    """(MSA-1, MSA-2, MSA-3)."""
    msa = ack.segment("MSA")
    return str(msa(1)), str(msa(2)), str(msa(3)) if len(msa) > 3 else ""


def listen_settings(**listen) -> HbysSettings:
    return HbysSettings(mllp_listen=MllpIn(enabled=True, host="127.0.0.1", port=free_port(), **listen))


@pytest.fixture
def sessions(db_url: str) -> sessionmaker[Session]:  # noqa: F811
    """A fresh database: every intake, worklist and reconciliation test runs on SQLite and PostgreSQL."""
    engine, made = open_database(db_url)
    yield made
    engine.dispose()


@pytest.fixture
def hbys(sessions) -> Iterator[Hbys]:
    settings = listen_settings(sender_charsets={"UTFHBYS": "UNICODE UTF-8"}, max_frame_bytes=256 * 1024)
    listen = settings.mllp_listen
    listener = MllpListener(listen.host, listen.port, Intake(sessions, settings).receive,
                            max_frame_bytes=listen.max_frame_bytes, idle_timeout=5)
    listener.start()
    try:
        yield Hbys(listen.port, sessions, listener)
    finally:
        listener.stop()
