"""A minimal raw native-protocol client for tests that must send exact (often bad) frames."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import websockets

from collab.events import hello_bytes
from collab.keys import Keypair


class Raw:
    """One WebSocket connection; ``frames`` collects every received frame in order."""

    def __init__(self, ws: Any, challenge: dict[str, Any]) -> None:
        self.ws = ws
        self.challenge = challenge
        self.frames: list[dict[str, Any]] = []
        self._cond = asyncio.Condition()
        self._reader = asyncio.get_running_loop().create_task(self._read())
        self.closed: asyncio.Future[tuple[int | None, str]] = asyncio.get_running_loop().create_future()

    @classmethod
    async def connect(cls, ws_url: str, key: Keypair | None = None, max_size: int | None = 2**24) -> Raw:
        ws = await websockets.connect(ws_url, max_size=max_size)
        challenge = json.loads(await ws.recv())
        assert challenge["t"] == "challenge"
        raw = cls(ws, challenge)
        if key is not None:
            await raw.hello(key)
        return raw

    async def hello(self, key: Keypair) -> dict[str, Any]:
        sig = key.sign(hello_bytes(key.public_hex, self.challenge["nonce"], self.challenge["relay"])).hex()
        await self.send({"t": "hello", "key": key.public_hex, "sig": sig})
        return await self.wait(lambda f: f["t"] in ("welcome", "error"))

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                for part in msg.split("\n"):
                    if part:
                        async with self._cond:
                            self.frames.append(json.loads(part))
                            self._cond.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            if not self.closed.done():
                self.closed.set_result((self.ws.close_code, self.ws.close_reason or ""))
            async with self._cond:
                self._cond.notify_all()

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(frame if isinstance(frame, (str, bytes)) else json.dumps(frame))

    async def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0,
                   start: int = 0) -> dict[str, Any]:
        """Wait for the first frame (at index >= start) matching ``pred``."""

        async def find() -> dict[str, Any]:
            async with self._cond:
                while True:
                    for f in self.frames[start:]:
                        if pred(f):
                            return f
                    if self.closed.done():
                        raise ConnectionError(f"closed {self.closed.result()} before a matching frame")
                    await self._cond.wait()

        return await asyncio.wait_for(find(), timeout)

    async def request(self, frame: dict[str, Any], rid: str, timeout: float = 10.0) -> dict[str, Any]:
        frame = {**frame, "rid": rid}
        await self.send(frame)
        replies = ("ok", "error", "pong", "unsubbed", "watching", "unwatched")
        return await self.wait(lambda f: f.get("rid") == rid and f["t"] in replies, timeout)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
