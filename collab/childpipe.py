"""A child process's pipes, pumped by the event loop: length-framed payloads in both directions.

The one channel to a helper process (the Yjs sandbox's children, ``collab.sandbox_supervisor``;
the relay's signature verifier, ``relay.core.verifier``): the child reads frames on its stdin and
writes frames on its stdout, a frame being a 4-byte big-endian length and the payload. The parent
side is driven by the event loop itself: ``loop.add_reader`` on the child's stdout and
non-blocking ``os.write`` on its stdin (``add_writer`` only while a large request does not fit
the pipe). A round trip costs two system calls and one callback, no stream objects, transports or
tasks (asyncio's subprocess transport and ``StreamReader`` cost about 45 µs more of the parent's
CPU per round trip, docs/reliability.md "The channel, and what a check costs").

:class:`FrameBuffer` is the sans-I/O part (bytes in, whole payloads out), which the children use
too; :class:`ChildPipe` is the parent's end. The owner gets every payload through ``on_frame`` and
the end of the channel (the child exited, closed its output, or stopped reading) through
``on_end``, once; it decides what a payload answers.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import subprocess
from collections.abc import Callable, Mapping, Sequence

log = logging.getLogger(__name__)

LEN = struct.Struct(">I")  # a frame's length prefix
READ_SIZE = 1 << 16


def frame(payload: bytes) -> bytes:
    return LEN.pack(len(payload)) + payload


class FrameBuffer:
    """Bytes in, whole payloads out (sans-I/O). A chunk that holds exactly one frame, the common
    case, is cut without copying it into the buffer; a frame that arrives in many reads (a
    document's state, megabytes in 64 KiB reads) is gathered in a bytearray, each byte copied once."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        held = self._buf
        buf: bytes | bytearray = data
        if held:
            held += data
            buf = held
        end = len(buf)
        out: list[bytes] = []
        pos = 0
        while end - pos >= 4:
            (n,) = LEN.unpack_from(buf, pos)
            if end - pos - 4 < n:
                break
            part = buf[pos + 4:pos + 4 + n]
            out.append(part if isinstance(part, bytes) else bytes(part))
            pos += 4 + n
        if held:
            del held[:pos]
        elif pos < end:
            held += memoryview(buf)[pos:]
        return out


def serve(stdin: int, stdout: int, answer: Callable[[bytes], bytes], ready: bytes) -> None:
    """The child's end: write the frame ``ready``, then answer each request frame read on
    ``stdin`` with the frame ``answer(payload)`` on ``stdout``, in order, until the input ends
    (blocking I/O: a child does nothing else). What ``answer`` raises propagates."""
    write_all(stdout, frame(ready))
    buf = FrameBuffer()
    while data := os.read(stdin, READ_SIZE):  # below malloc's mmap threshold: no mmap/munmap per request
        for payload in buf.feed(data):
            write_all(stdout, frame(answer(payload)))


def write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


class ChildPipe:
    """The parent's end of one child process (started at once): :meth:`send` a payload, receive
    each reply payload through ``on_frame``; ``on_end(why)`` is called once when the channel ends
    (the child's output closed, or writing to it failed), also from inside :meth:`send`. After
    that, or after :meth:`close`, nothing more is delivered and sends are dropped."""

    def __init__(self, argv: Sequence[str], on_frame: Callable[[bytes], None], on_end: Callable[[str], None],
                 env: Mapping[str, str] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        # as asyncio's own subprocess transport does, Popen runs in the loop (a vfork/exec: fast);
        # the argv is the owner's, nothing from a peer
        self.proc = subprocess.Popen(  # noqa: S603
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=None if env is None else dict(env))
        if self.proc.stdin is None or self.proc.stdout is None:  # pragma: no cover - PIPE gives both
            self.proc.kill()
            raise OSError("the child has no pipes")
        self._in, self._outfd = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        os.set_blocking(self._in, False)
        os.set_blocking(self._outfd, False)
        self._on_frame, self._on_end = on_frame, on_end
        self._buf = FrameBuffer()
        self._out = b""  # request bytes the pipe has not taken yet
        self.open = True
        self._loop.add_reader(self._outfd, self._readable)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, payload: bytes) -> None:
        """Write one frame (what the pipe does not take now is written as the child reads)."""
        if not self.open:
            return
        data = LEN.pack(len(payload)) + payload
        if self._out:
            self._out += data
            return
        try:
            n = os.write(self._in, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._end(f"it stopped reading ({exc})")
            return
        if n < len(data):  # the pipe is full (a large request): the loop sends the rest
            self._out = data[n:]
            self._loop.add_writer(self._in, self._writable)

    def _writable(self) -> None:
        if not self.open:
            return
        try:
            n = os.write(self._in, self._out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._end(f"it stopped reading ({exc})")
            return
        self._out = self._out[n:]
        if not self._out:
            self._loop.remove_writer(self._in)

    def _readable(self) -> None:
        try:
            data = os.read(self._outfd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._end("it ended")
            return
        for payload in self._buf.feed(data):
            if not self.open:  # the owner closed it while taking an earlier payload
                return
            self._on_frame(payload)

    def _end(self, why: str) -> None:
        if self.open:
            self._unwatch()
            self._on_end(why)

    def _unwatch(self) -> None:
        self.open = False
        self._out = b""
        self._loop.remove_reader(self._outfd)
        self._loop.remove_writer(self._in)

    def close(self) -> None:
        """Stop delivering, kill the child if it still runs and close the pipes (``on_end`` is
        not called). :meth:`wait` reaps it."""
        if self.open:
            self._unwatch()
        if self.proc.poll() is None:
            self.proc.kill()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()

    def kill(self) -> None:
        """Kill the child, leaving the pipes to report its end (``on_end``)."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    async def wait(self, timeout: float | None = None) -> int | None:
        """The child's exit code, once it ended (in a thread; killed after ``timeout`` s)."""
        if timeout is None:
            return await asyncio.to_thread(self.proc.wait)
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.to_thread(self.proc.wait)
        except TimeoutError:
            self.proc.kill()
            return await asyncio.to_thread(self.proc.wait)


__all__ = ["LEN", "ChildPipe", "FrameBuffer", "frame", "serve", "write_all"]
