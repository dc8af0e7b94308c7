"""An API on a fresh database with one account per role, and helpers to fill the index.

pytest-asyncio runs in strict mode (no asyncio_mode in pyproject): modules mark their coroutine tests
with `pytestmark = pytest.mark.asyncio` and async fixtures use pytest_asyncio.fixture."""
from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import yaml
from sqlalchemy.orm import Session, sessionmaker

from neuropetrix.api import users
from neuropetrix.api.ops import Readiness
from neuropetrix.api.server import build_app
from neuropetrix.config.loader import parse_settings
from neuropetrix.config.settings import Settings
from neuropetrix.store.accounts import ROLES
from neuropetrix.store.db import open_database, utcnow
from neuropetrix.store.index import InstanceRecord, StudyIndex
from neuropetrix.store.models import Event

PASSWORD = "correct horse battery"
_uids = itertools.count(1)


class MovableClock:
    """Unix time that stands still until a test moves it: token expiry without sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class ApiEnv:
    settings: Settings
    sessions: sessionmaker[Session]
    data_dir: Path
    dicom_up: list[bool]
    clock: MovableClock

    def app(self, sessions: sessionmaker[Session] | None = None):
        return build_app(self.settings, sessions or self.sessions,
                         Readiness(self.settings.node.storage_dir, dicom_listening=lambda: self.dicom_up[0]),
                         clock=self.clock)

    def add_instance(self, study_uid: str, modality: str = "PT", series: int = 1, **kw) -> None:
        n = next(_uids)
        rec = InstanceRecord(sop_class_uid="1.2.840.10008.5.1.4.1.1.128", sop_instance_uid=f"1.2.3.9.{n}",
                             study_uid=study_uid, series_uid=f"{study_uid}.{series}",
                             transfer_syntax_uid="1.2.840.10008.1.2.1", path=f"x/{n}.dcm", size_bytes=1000,
                             modality=modality, series_number=series, calling_ae="STORESCU", **kw)
        StudyIndex(self.sessions).add(rec)

    def add_event(self, kind: str, study_uid: str | None = None, **payload) -> int:
        with self.sessions.begin() as s:
            e = Event(kind=kind, study_uid=study_uid, created_at=utcnow(), payload=payload)
            s.add(e)
            s.flush()
            return e.id


def make_settings(data_dir: Path, push: dict | None = None, **api) -> Settings:
    config = {"node": {"data_dir": str(data_dir)}, "push": push or {},
              "engine": {"poll_seconds": 0.05, "retry": {"base_seconds": 0.05, "max_seconds": 0.2, "jitter": 0}},
              "api": {"login_failures_per_account": 3, "login_failures_per_address": 6,
                      "event_poll_seconds": 0.02, "heartbeat_seconds": 1.0, **api}}
    return parse_settings(yaml.safe_dump(config), "test", environ={})


@pytest.fixture(scope="session")
def accounts_db(tmp_path_factory) -> Path:
    """A migrated database with one account per role (argon2 is slow on purpose: hash once, copy)."""
    path = tmp_path_factory.mktemp("accounts") / "neuropetrix.db"
    engine, sessions = open_database(f"sqlite:///{path}")
    with sessions.begin() as s:
        for role in ROLES:
            users.add_user(s, role, PASSWORD, role)
    engine.dispose()
    return path


@pytest.fixture
def make_env(tmp_path, accounts_db) -> Callable[..., ApiEnv]:
    def make(push: dict | None = None, **api) -> ApiEnv:
        settings = make_settings(tmp_path / "var", push, **api)
        settings.node.storage_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(accounts_db, settings.node.data_dir / "neuropetrix.db")
        _, sessions = open_database(settings.node.db_url)
        return ApiEnv(settings, sessions, settings.node.data_dir, [True], MovableClock())
    return make


@pytest.fixture
def env(make_env) -> ApiEnv:
    return make_env()


@pytest_asyncio.fixture
async def client(env, aiohttp_client):
    return await aiohttp_client(env.app())


async def served(aiohttp_server, app) -> tuple[str, dict]:
    """`app` served on a loopback port for a browser: its base URL and the admin's tokens."""
    server = await aiohttp_server(app)
    base = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/api/auth/login", json={"username": "admin", "password": PASSWORD}) as r:
            assert r.status == 200, await r.text()
            return base, await r.json()


async def login(client, username: str, password: str = PASSWORD) -> dict:
    r = await client.post("/api/auth/login", json={"username": username, "password": password})
    assert r.status == 200, await r.text()
    return await r.json()


def bearer(tokens: dict | str) -> dict[str, str]:
    token = tokens if isinstance(tokens, str) else tokens["access_token"]
    return {"Authorization": f"Bearer {token}"}
