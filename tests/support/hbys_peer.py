"""The hospital side in tests: an HL7 MLLP listener (python-hl7's asyncio server, a different HL7
library from the one that writes our ORU) and a small FHIR endpoint (aiohttp), each on its own event
loop thread, recording what they received and answering as each test tells them."""
from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import hl7
from aiohttp import web
from hl7.mllp import start_hl7_server

from tests.support.nodeproc import free_port


class LoopThread:
    """An asyncio loop in a daemon thread, for servers the synchronous tests talk to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@dataclass
class MllpListener:
    port: int
    answers: list[str]                          # ACK codes in turn; the last one repeats
    received: list[str] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    hold: threading.Event | None = None         # when given, no ACK goes out until it is set

    def next_code(self) -> str:
        return self.answers[min(len(self.acked), len(self.answers) - 1)]

    def control_ids(self) -> list[str]:
        return [str(hl7.parse(m).segment("MSH")(10)) for m in self.received]


@contextmanager
def mllp_listener(answers: list[str] | None = None, hold: threading.Event | None = None,
                  ssl: Any = None) -> Iterator[MllpListener]:
    """python-hl7's MLLP server answering `answers` (default AA) with create_ack (over TLS with `ssl`)."""
    listener = MllpListener(free_port(), answers or ["AA"], hold=hold)
    loop = LoopThread()

    async def handle(reader, writer) -> None:
        try:
            while not reader.at_eof():
                message = await reader.readmessage()
                listener.received.append(str(message))
                if listener.hold is not None:
                    await asyncio.get_running_loop().run_in_executor(None, listener.hold.wait)
                code = listener.next_code()
                writer.writemessage(message.create_ack(ack_code=code))
                await writer.drain()
                listener.acked.append(code)
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def start():
        return await start_hl7_server(handle, "127.0.0.1", listener.port, encoding="utf-8", ssl=ssl)

    server = loop.run(start())
    try:
        yield listener
    finally:
        async def stop() -> None:
            server.close()
            await server.wait_closed()
        loop.run(stop())
        loop.close()


@dataclass
class FhirEndpoint:
    port: int
    token: str | None
    answers: list[int]                           # HTTP statuses in turn; the last one repeats
    bundles: list[dict] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"


@contextmanager
def fhir_endpoint(token: str | None = None, answers: list[int] | None = None) -> Iterator[FhirEndpoint]:
    """POST /fhir takes a transaction Bundle and answers a transaction-response (or 429/503 with
    Retry-After: 1, as `answers` says). A wrong or missing bearer token gets 401."""
    endpoint = FhirEndpoint(free_port(), token, answers or [200])
    loop = LoopThread()

    async def post(request: web.Request) -> web.Response:
        if endpoint.token and request.headers.get("Authorization") != f"Bearer {endpoint.token}":
            endpoint.statuses.append(401)
            return web.json_response({"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "login", "diagnostics": "bad token"}]}, status=401)
        turn = sum(1 for s in endpoint.statuses if s != 401)      # refused logins take no turn
        status = endpoint.answers[min(turn, len(endpoint.answers) - 1)]
        endpoint.statuses.append(status)
        if status != 200:
            return web.Response(status=status, headers={"Retry-After": "1"}, text="busy")
        bundle = json.loads(await request.read())
        endpoint.bundles.append(bundle)
        entries = [{"response": {"status": "201 Created"}} for _ in bundle.get("entry", [])]
        return web.json_response({"resourceType": "Bundle", "type": "transaction-response", "entry": entries},
                                 content_type="application/fhir+json")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/fhir", post)
    runner = web.AppRunner(app)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", endpoint.port).start()

    loop.run(start())
    try:
        yield endpoint
    finally:
        loop.run(runner.cleanup())
        loop.close()
