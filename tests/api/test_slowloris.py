"""Slowloris (issue 14, item 10): connections that trickle their headers, send nothing, or trickle a
body are closed by the server after `api.idle_timeout_seconds` / `api.body_timeout_seconds`; beyond
`api.max_connections` a new connection is answered 503 and closed. The API keeps answering meanwhile.
The real server (api/server.py) on a loopback port, raw sockets as the attacker."""
from __future__ import annotations

import json
import selectors
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from neuropetrix.api.ops import Readiness
from neuropetrix.api.server import ApiServer
from tests.support.nodeproc import free_port

pytestmark = pytest.mark.faults


@pytest.fixture
def start(make_env) -> Iterator[Callable[..., ApiServer]]:
    servers = []

    def make(**api) -> ApiServer:
        env = make_env(**api)
        env.settings.node.api_port = free_port()
        srv = ApiServer(env.settings, env.sessions, Readiness(env.settings.node.storage_dir, lambda: True))
        srv.start()
        servers.append(srv)
        return srv
    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def server(start) -> ApiServer:
    return start(idle_timeout_seconds=1.0, body_timeout_seconds=1.0)


def _connect(port: int, first: bytes = b"") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if first:
        s.sendall(first)
    return s


def _readable(socks: list[socket.socket], timeout: float) -> list[socket.socket]:
    """The sockets with something to read (poll, not select: a worker process of the suite may hold
    descriptors above select's 1024)."""
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        return [key.fileobj for key, _ in sel.select(timeout)]


def _closed_by_server(socks: list[socket.socket], trickle: bool, within: float) -> list[socket.socket]:
    """Trickle a header byte a second into each (if asked) until the server closes them; the open ones."""
    deadline = time.monotonic() + within
    open_ = list(socks)
    while open_ and time.monotonic() < deadline:
        readable = _readable(open_, 0.25)
        for s in readable:
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                data = b""
            if not data or b"HTTP/1.1 408" in data or b"HTTP/1.1 400" in data:
                open_.remove(s)
                s.close()
        if trickle:
            for s in open_:
                try:
                    s.send(b"X")
                except OSError:
                    open_.remove(s)
    return open_


def _healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        return r.status


def test_trickling_and_idle_connections_are_closed(server):
    port = server.port
    trickling = [_connect(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") for _ in range(150)]
    idle = [_connect(port) for _ in range(150)]
    assert _healthz(port) == 200                      # the API answers while they hang
    assert _closed_by_server(trickling, trickle=True, within=10) == []
    assert _closed_by_server(idle, trickle=False, within=10) == []
    assert _healthz(port) == 200


def test_a_trickled_body_is_cut_off(server):
    s = _connect(server.port, b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              b"Content-Length: 1000\r\n\r\n{")
    started = time.monotonic()
    answer = b""
    while time.monotonic() - started < 10:
        readable = _readable([s], 0.25)
        if readable:
            answer = s.recv(65536)
            break
        s.send(b" ")
    s.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert "within" in json.loads(answer.split(b"\r\n\r\n", 1)[1])["message"]


def test_connections_beyond_the_cap_are_refused_with_503(start):
    server = start(max_connections=100)
    held = []
    for _ in range(100):         # each one served once, so the server holds it (kept alive) before the next
        held.append(_connect(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert held[-1].recv(4096).startswith(b"HTTP/1.1 200")
    extra = _connect(server.port)
    assert extra.recv(4096).startswith(b"HTTP/1.1 503")
    extra.close()
    for s in held:
        s.close()
    deadline = time.monotonic() + 5
    while True:                                       # the server notices the closes
        try:
            assert _healthz(server.port) == 200
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
