"""One Redis connection that every request shares: commands are written the moment they are asked for
and replies matched to them in order (Redis answers each connection's commands in order).

The request path's Redis work (a key's admission, the cache lookup, settling, the cache write) goes
through here rather than through redis-py's pooled client: no pool to lock, count and hand back, no
per-command bookkeeping, and a command is on the wire when `send` returns, so the gateway scores the
request while Redis answers. Concurrent requests' commands share writes and reads. redis-py parses
the URL and builds the TLS context; hiredis packs commands and parses replies. Measured against
redis-py's client in docs/operations.md#redis-on-the-request-path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, cast

import hiredis

Command = tuple[Any, ...]


class Script:
    """A Lua script run by its SHA-1 (EVALSHA); the connection sends the source (EVAL) instead when
    Redis answers NOSCRIPT, which also loads it again (a restarted, empty Redis)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, keys: Sequence[str], args: Sequence[Any]) -> Command:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


class RedisReplyError(Exception):
    """Redis answered a command with an error (`-ERR ...`, `-NOSCRIPT ...`)."""


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self._reader = hiredis.Reader(encoding="utf-8", errors="replace")
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        try:
            self._reader.feed(data)
            while (reply := self._reader.gets()) is not False:
                future = self.waiting.popleft()
                if future.done():  # its caller gave up (its bound); the reply is read and dropped
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(RedisReplyError(str(reply)))
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked for
            self._fail(ConnectionError(f"redis protocol error: {exc}"))
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"redis connection lost: {exc}" if exc else "redis closed the connection"))

    def _fail(self, error: BaseException) -> None:
        self.lost = error
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)


class Multiplexed:
    """The shared connection: made on first use, made again after it is lost or dropped."""

    def __init__(self, url: str, password: str | None = None, write_behind_s: float = 0.005,
                 connect_timeout_s: float = 1.0) -> None:
        from redis.asyncio.connection import parse_url

        self._options: dict[str, Any] = dict(parse_url(url))
        if password is not None:
            self._options["password"] = password
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._scripts: dict[str, str] = {}  # sha -> source
        self._ssl: ssl.SSLContext | None = None
        self._held: list[bytes] | None = None  # commands held for one write, inside `batch`
        self.write_behind_s = write_behind_s
        self.connect_timeout_s = connect_timeout_s
        self._behind: list[tuple[list[asyncio.Future[Any]], list[bytes]]] = []  # sent `later`, not yet written
        self._flush_at: asyncio.TimerHandle | None = None
        self._flushed: asyncio.Future[float] | None = None

    def register(self, source: str) -> Script:
        script = Script(source)
        self._scripts[script.sha] = source
        return script

    @property
    def connected(self) -> bool:
        p = self._protocol
        return p is not None and p.lost is None and p.transport is not None and not p.transport.is_closing()

    def send(self, commands: Sequence[Command], later: bool = False) -> list[asyncio.Future[Any]] | None:
        """Write the commands now (or at the end of a `batch`; or, `later`, with the next write-behind
        flush) and return a future per reply; None when not connected yet."""
        if not self.connected:
            return None
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        packed = [hiredis.pack_command(c) for c in commands]
        if later:
            self._behind.append((futures, packed))
            if self._flush_at is None:
                self._flush_at = loop.call_later(self.write_behind_s, self._flush_behind)
                self._flushed = loop.create_future()
            return futures
        protocol = self._protocol
        assert protocol is not None and protocol.transport is not None
        protocol.waiting.extend(futures)
        if self._held is not None:
            self._held.extend(packed)
        else:
            protocol.transport.write(b"".join(packed))
        return futures

    def flushed(self) -> asyncio.Future[float] | None:
        """When the commands sent `later` so far go out: the loop's time then (None: nothing queued). A
        busy event loop runs the flush late; the replies' bound starts from it, not from the queueing."""
        return self._flushed

    def _flush_behind(self) -> None:
        """The write-behind queue in one write, its replies awaited in the order they were queued."""
        if self._flush_at is not None:
            self._flush_at.cancel()
        self._flush_at = None
        flushed, self._flushed = self._flushed, None
        if flushed is not None and not flushed.done():
            flushed.set_result(asyncio.get_running_loop().time())
        queued, self._behind = self._behind, []
        protocol = self._protocol
        if not self.connected or protocol is None or protocol.transport is None:
            for futures, _ in queued:
                for future in futures:
                    if not future.done():
                        future.set_exception(ConnectionError("redis connection lost before a write-behind flush"))
            return
        for futures, _ in queued:
            protocol.waiting.extend(futures)
        protocol.transport.write(b"".join(p for _, packed in queued for p in packed))

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Commands sent inside go out in one write when it ends: one system call (and one wake-up of
        Redis) for a request's admission and its cache lookup."""
        if self._held is not None:  # already inside one
            yield
            return
        self._held = []
        protocol = self._protocol
        try:
            yield
        finally:
            held, self._held = self._held, None
            # Only to the connection the replies are awaited on (one lost meanwhile failed them).
            if held and protocol is self._protocol and self.connected:
                assert protocol is not None and protocol.transport is not None
                protocol.transport.write(b"".join(held))

    async def execute(self, commands: Sequence[Command]) -> list[Any]:
        """Connect when needed, send, and wait for every reply (errors raise RedisReplyError)."""
        futures = self.send(commands)
        if futures is None:
            await self.connect()
            futures = self.send(commands)
            if futures is None:
                raise ConnectionError("redis connection lost while connecting")
        return await self.wait(commands, futures)

    async def wait(self, commands: Sequence[Command], futures: list[asyncio.Future[Any]]) -> list[Any]:
        """The replies to `commands` sent as `futures`; a script Redis did not know is sent again whole."""
        if len(futures) == 1:
            try:
                return [await futures[0]]
            except RedisReplyError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
        replies = await asyncio.gather(*futures, return_exceptions=True)
        again = [i for i, r in enumerate(replies) if isinstance(r, RedisReplyError) and str(r).startswith("NOSCRIPT")
                 and commands[i][0] == "EVALSHA" and commands[i][1] in self._scripts]
        if again:
            resent = await self.execute([("EVAL", self._scripts[commands[i][1]], *commands[i][2:]) for i in again])
            for i, reply in zip(again, resent, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return list(replies)

    async def connect(self) -> None:
        """One connection attempt at a time: concurrent callers wait on the same one."""
        if self.connected:
            return
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._open())
            # Its caller may have stopped waiting (its bound): the outcome is read here, never lost.
            self._connecting.add_done_callback(lambda task: task.cancelled() or task.exception())
        self._protocol = await asyncio.shield(self._connecting)

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        o = self._options
        async with asyncio.timeout(self.connect_timeout_s):  # a host that never answers: give up, try again
            if "path" in o:
                _, protocol = await loop.create_unix_connection(_Protocol, o["path"])
            else:
                host, port = o.get("host", "localhost"), o.get("port", 6379)
                context = self._ssl_context()
                _, protocol = await loop.create_connection(_Protocol, host, port, ssl=context,
                                                           server_hostname=host if context is not None else None)
        try:
            handshake: list[Command] = []
            if o.get("password"):
                handshake.append(("AUTH", o["username"], o["password"]) if o.get("username")
                                 else ("AUTH", o["password"]))
            if o.get("db"):
                handshake.append(("SELECT", o["db"]))
            if handshake:
                self._protocol = protocol
                futures = self.send(handshake)
                assert futures is not None
                await asyncio.gather(*futures)
        except BaseException:
            self._drop(protocol)
            raise
        return protocol

    def _ssl_context(self) -> ssl.SSLContext | None:
        from redis.asyncio.connection import SSLConnection

        if self._options.get("connection_class") is not SSLConnection:
            return None
        from redis.asyncio.connection import RedisSSLContext

        o = self._options
        if self._ssl is None:  # made once: loading the CA file is not for every reconnection
            self._ssl = RedisSSLContext(keyfile=o.get("ssl_keyfile"), certfile=o.get("ssl_certfile"),
                                        cert_reqs=o.get("ssl_cert_reqs", "required"), ca_certs=o.get("ssl_ca_certs"),
                                        ca_data=o.get("ssl_ca_data"),
                                        check_hostname=o.get("ssl_check_hostname", True)).get()
        return self._ssl

    def drop(self) -> None:
        """Close the connection (its waiting commands fail); the next command makes a new one. For a
        Redis that stopped answering: a connection that died without a word would otherwise be
        waited on for ever."""
        if self._protocol is not None:
            self._drop(self._protocol)
            self._protocol = None

    @staticmethod
    def _drop(protocol: _Protocol) -> None:
        protocol._fail(ConnectionError("redis connection dropped"))
        if protocol.transport is not None:
            with contextlib.suppress(Exception):
                protocol.transport.abort()

    async def close(self, grace_s: float = 0.1) -> None:
        """Write what is queued and give the replies in flight `grace_s` to arrive (settlements at
        shutdown: concurrency slots given back), then close."""
        if self._behind:
            self._flush_behind()  # written if still connected; their callers hear either way
        protocol = self._protocol
        if protocol is not None and protocol.waiting and self.connected:
            with contextlib.suppress(Exception):
                await asyncio.wait(list(protocol.waiting), timeout=grace_s)
        self.drop()
