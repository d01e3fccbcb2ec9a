"""The comparison server for ``bench_doc.py``: pycrdt-websocket, deployed as its docs show.

``ASGIServer(WebsocketServer())`` served by uvicorn (uvloop + httptools, uvicorn's default
WebSocket implementation), i.e. the same ASGI server stack the Colony relay runs on, so the
comparison is between the two applications rather than between two HTTP servers. Every
client connects to ws://HOST:PORT/<room>; the room's ``Doc`` applies each update and
broadcasts it to every client in the room (y-protocol, no persistence: no YStore).

Prints ``pycrdt-websocket listening on http://HOST:PORT`` once it accepts connections.
Runs until SIGINT/SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import logging

import uvicorn

try:  # pycrdt-websocket >= 0.13 lives in the pycrdt namespace package
    from pycrdt.websocket import ASGIServer, WebsocketServer
except ImportError:  # pragma: no cover - older releases
    from pycrdt_websocket import ASGIServer, WebsocketServer  # type: ignore[no-redef]


def _quiet_disconnects(exc: Exception, log: logging.Logger) -> bool:
    """A client that goes away mid-send is normal at the end of a run: log, keep serving."""
    log.debug("pycrdt-websocket: %r", exc)
    return True


async def main(host: str, port: int) -> None:
    websocket_server = WebsocketServer(exception_handler=_quiet_disconnects)
    app = ASGIServer(websocket_server)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", loop="uvloop")
    server = uvicorn.Server(config)
    async with websocket_server:
        task = asyncio.get_running_loop().create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                return
            await asyncio.sleep(0.01)
        h, p = server.servers[0].sockets[0].getsockname()[:2]
        print(f"pycrdt-websocket listening on http://{h}:{p}", flush=True)
        await task


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.run(main(args.host, args.port))
    except KeyboardInterrupt:
        pass
