"""The anchor for `sync_fanout.py`: pycrdt-websocket's ASGI server under uvicorn.

uvicorn gets the options `escenario serve` is run with (no per-message deflate, 16 MiB frames,
the same loop and HTTP defaults, graceful-shutdown timeout, warning-level logging) and the stock
`websockets` WebSocket implementation (`--ws` picks another, e.g. `websockets-sansio`), so what
differs is the server code. The room name is the URL path, as in pycrdt-websocket.

By default rooms have no store, which is pycrdt-websocket's default. `--store-dir` gives every
room a pycrdt-store `SQLiteYStore` (the setup jupyter-collaboration uses); it writes each update
in the background after broadcasting it.

Usage: python benchmarks/_pycrdt_websocket_server.py --port 8001 [--store-dir DIR] [--ws IMPL]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import uvicorn
from pycrdt.store import SQLiteYStore
from pycrdt.websocket import ASGIServer, WebsocketServer, YRoom

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # escenario's default `max_message_bytes`


class StoredWebsocketServer(WebsocketServer):
    """`WebsocketServer` whose rooms persist their updates in one SQLite database."""

    def __init__(self, db_path: Path) -> None:
        super().__init__()
        self._ystore_class = type("BenchYStore", (SQLiteYStore,), {"db_path": str(db_path)})

    async def get_room(self, name: str) -> YRoom:
        if name not in self.rooms:
            self.rooms[name] = YRoom(
                ready=self.rooms_ready,
                ystore=self._ystore_class(path=name, log=self.log),
                exception_handler=self.exception_handler,
                log=self.log,
            )
        room = self.rooms[name]
        await self.start_room(room)
        return room


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store-dir", type=Path, help="persist rooms in DIR/ystore.db (SQLiteYStore)")
    parser.add_argument(
        "--ws", default="websockets", help="uvicorn WebSocket implementation (default websockets)"
    )
    args = parser.parse_args()

    websocket_server: WebsocketServer
    if args.store_dir is not None:
        args.store_dir.mkdir(parents=True, exist_ok=True)
        websocket_server = StoredWebsocketServer(args.store_dir / "ystore.db")
    else:
        websocket_server = WebsocketServer()
    config = uvicorn.Config(
        ASGIServer(websocket_server),
        host=args.host,
        port=args.port,
        log_level="warning",
        ws=args.ws,
        ws_max_size=MAX_MESSAGE_BYTES,
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=10,
        lifespan="on",
    )

    async def serve() -> None:
        async with websocket_server:
            await uvicorn.Server(config).serve()

    # The loop `uvicorn.run` would pick (uvloop when installed), as for `escenario serve`.
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(serve())


if __name__ == "__main__":
    main()
