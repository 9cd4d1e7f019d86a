"""A small HTTP/1.1 load generator on asyncio: many kept-alive connections, one request in
flight on each, every answer timed. It costs the client far less CPU per request than an HTTP
library would, which matters when client and server share two cores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    latency: float
    """Seconds from writing the request to having read the whole answer."""
    answered_at: float
    """Wall-clock time (time.time()) the answer was read, to compare with database times."""


@dataclass(frozen=True)
class Burst:
    answers: list[Answer]
    """In the order of the requests."""
    started_at: float
    """Wall-clock time the first request was written."""
    seconds: float
    """From the first request written to the last answer read."""
    client_cpu: float

    @property
    def per_second(self) -> float:
        return len(self.answers) / self.seconds

    def latency_quantile(self, q: float) -> float:
        ordered = sorted(a.latency for a in self.answers)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def finished_at(self) -> float:
        return self.started_at + self.seconds


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()
            self.reader = self.writer = None

    async def exchange(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None
        assert self.writer is not None
        self.writer.writelines((head, body))
        status_and_headers = await self.reader.readuntil(b"\r\n\r\n")
        lines = status_and_headers.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines[1:] if line)
        }
        if "content-length" not in headers:
            raise RuntimeError(f"an answer without Content-Length: {status_and_headers!r}")
        content = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, content


async def _burst(
    host: str,
    port: int,
    requests: Sequence[tuple[str, bytes]],
    headers: dict[str, str],
    concurrency: int,
) -> Burst:
    fixed = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    connections = [_Connection(host, port) for _ in range(min(concurrency, len(requests)))]
    await asyncio.gather(*(c.open() for c in connections))
    answers: list[Answer | None] = [None] * len(requests)
    pending: Iterator[int] = iter(range(len(requests)))

    async def run(connection: _Connection) -> None:
        for index in pending:  # one iterator shared by every connection: the next request
            path, body = requests[index]
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{fixed}"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode("latin-1")
            sent = time.perf_counter()
            status, content = await connection.exchange(head, body)
            latency = time.perf_counter() - sent
            answers[index] = Answer(status, content, latency, time.time())

    cpu = time.process_time()
    started_at, started = time.time(), time.perf_counter()
    try:
        await asyncio.gather(*(run(c) for c in connections))
    finally:
        seconds = time.perf_counter() - started
        await asyncio.gather(*(c.close() for c in connections))
    done = [a for a in answers if a is not None]
    assert len(done) == len(requests)
    return Burst(done, started_at, seconds, time.process_time() - cpu)


def post_all(
    url: str,
    requests: Sequence[tuple[str, bytes]],
    *,
    headers: dict[str, str],
    concurrency: int,
) -> Burst:
    """POST every (path, body) to the server at `url` (http://host:port) on `concurrency`
    connections, each taking the next request as soon as its answer is read."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        return runner.run(_burst(host, int(port), requests, headers, concurrency))


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (uvicorn[standard] brings it), as the servers use."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
