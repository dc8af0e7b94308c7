"""The HL7 v2 MLLP listener: ADT/ORM/OMG from the HBYS, one asyncio loop in a thread of the node.

MLLP frames are <VT> message <FS><CR>. Each frame goes to the injected `handler` (engine/orders.py's
Intake, run in a worker thread: it stores the message, applies it and builds the ACK), and the ACK
bytes it returns are sent back before the next frame is read (original mode). The listener itself
never parses HL7 and imports no engine code.

Bad input costs only its own connection: bytes outside a frame are skipped with a log line, a frame
larger than `max_frame_bytes` closes the connection (there is no telling where the next frame starts),
callers outside `allowed_callers` are closed at once, silent connections after `idle_timeout`. If the
handler fails (the database is gone) no ACK goes out and the connection is closed, so the sender
sends the message again: an acknowledged message is always a stored one.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("neuropetrix.scp.mllp")
START, END, CR = b"\x0b", b"\x1c", b"\x0d"
READ_CHUNK = 65536

Handler = Callable[[bytes, str], bytes]      # (message bytes, caller address) → ACK bytes


class CallerPolicy:
    """Which addresses may connect: any when no network is configured."""

    def __init__(self, allowed: Sequence[str]) -> None:
        self.networks = [ipaddress.ip_network(a, strict=False) for a in allowed]

    def allows(self, host: str) -> bool:
        if not self.networks:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self.networks if net.version == address.version)


class FrameTooLarge(Exception):
    pass


class FrameReader:
    """Splits a byte stream into MLLP frames; skips and counts bytes outside frames."""

    def __init__(self, reader: asyncio.StreamReader, max_frame: int) -> None:
        self.reader = reader
        self.max_frame = max_frame
        self.buffer = bytearray()
        self.skipped = 0

    async def next_frame(self) -> bytes | None:
        """The next frame's content; None at the end of the stream."""
        while True:
            start = self.buffer.find(START)
            if start < 0:
                self.skipped += len(self.buffer.strip(b"\r\n\t "))
                self.buffer.clear()
            elif start > 0:
                self.skipped += len(bytes(self.buffer[:start]).strip(b"\r\n\t "))
                del self.buffer[:start]
            if self.buffer:
                end = self.buffer.find(END, 1)
                if end >= 0:
                    frame = bytes(self.buffer[1:end])
                    del self.buffer[:end + 1]
                    if self.buffer[:1] == CR:
                        del self.buffer[:1]
                    return frame
                if len(self.buffer) > self.max_frame:
                    raise FrameTooLarge(f"a frame longer than {self.max_frame} bytes")
            chunk = await self.reader.read(READ_CHUNK)
            if not chunk:
                if self.buffer:
                    self.skipped += len(self.buffer)
                return None
            self.buffer += chunk


class MllpListener:
    def __init__(self, host: str, port: int, handler: Handler, allowed_callers: Sequence[str] = (),
                 max_frame_bytes: int = 1 << 20, idle_timeout: float = 300.0, workers: int = 4,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.host, self.port = host, port
        self.ssl_context = ssl_context     # TLS only: a plaintext caller fails the handshake
        self.handler = handler
        self.policy = CallerPolicy(allowed_callers)
        self.max_frame_bytes = max_frame_bytes
        self.idle_timeout = idle_timeout
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="mllp-in")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.connections = 0
        self.frames = 0

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    def start(self) -> None:
        """Listen on host:port (raises OSError when the port cannot be bound)."""
        self._thread = threading.Thread(target=self._run, name="mllp-listener", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        log.info("HL7 MLLP listener on %s:%d%s", self.host, self.port, " (TLS)" if self.ssl_context else "")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(asyncio.start_server(
                self._connection, self.host, self.port, limit=READ_CHUNK, ssl=self.ssl_context,
                ssl_handshake_timeout=30.0 if self.ssl_context else None))
        except OSError as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername") or ("?", 0)
        host = str(peername[0])
        where = f"{host}:{peername[1]}" if len(peername) > 1 else host
        if not self.policy.allows(host):
            log.warning("MLLP connection from %s refused: not in hbys.mllp_listen.allowed_callers", where)
            writer.close()
            return
        self.connections += 1
        frames = FrameReader(reader, self.max_frame_bytes)
        loop = asyncio.get_running_loop()
        try:
            while True:
                reported = frames.skipped
                async with asyncio.timeout(self.idle_timeout):      # not wait_for: see api/event_feed.py
                    frame = await frames.next_frame()
                if frames.skipped > reported:
                    log.warning("MLLP %s: %d byte(s) outside an MLLP frame skipped", where, frames.skipped - reported)
                if frame is None:
                    break
                self.frames += 1
                ack = await loop.run_in_executor(self._pool, self.handler, frame, host)
                writer.write(START + ack + END + CR)
                await writer.drain()
        except FrameTooLarge as exc:
            log.warning("MLLP %s: %s refused; connection closed (hbys.mllp_listen.max_frame_bytes)", where, exc)
        except TimeoutError:
            log.info("MLLP %s: silent for %g s; connection closed", where, self.idle_timeout)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            log.info("MLLP %s: connection lost (%s)", where, exc)
        except Exception:
            log.exception("MLLP %s: the message could not be stored; no ACK sent, connection closed", where)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None or self._thread is None:
            return

        async def close() -> None:
            server.close()
            await server.wait_closed()
        try:
            asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        except TimeoutError:         # connections still open: stopping the loop ends them
            log.warning("MLLP listener: connections still open at stop")
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._pool.shutdown(wait=True)
