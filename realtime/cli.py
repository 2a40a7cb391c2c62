"""`escenario` command line: `serve` now; `worker`, `models` and `render` arrive with their issues."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import Settings, settings_from_env


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the server (HTTP API, /sync, web client)")
    p.add_argument("--host", help="address to bind (ESCENARIO_HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (ESCENARIO_PORT, default 8000)")
    p.add_argument("--data-dir", type=Path, help="data directory (ESCENARIO_DATA_DIR, default ./var)")
    p.add_argument(
        "--database-url",
        help="sqlite:///path.db or postgresql://user@host/db "
        "(ESCENARIO_DATABASE_URL; default SQLite in the data dir)",
    )
    p.add_argument("--redis-url", help="redis://host:6379/0 for scale-out backends (ESCENARIO_REDIS_URL)")
    p.add_argument("--web-dir", type=Path, help="built web client to serve at / (ESCENARIO_WEB_DIR)")
    p.add_argument("--log-level", help="debug|info|warning|error (ESCENARIO_LOG_LEVEL)")
    p.add_argument("--log-format", choices=["json", "text"], help="ESCENARIO_LOG_FORMAT, default json")


def build_settings(args: argparse.Namespace) -> Settings:
    settings = settings_from_env()
    return settings.replace(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        database_url=args.database_url,
        redis_url=args.redis_url,
        web_dir=args.web_dir,
        log_level=args.log_level,
        log_format=args.log_format,
    )


def serve(settings: Settings) -> None:
    import uvicorn

    from .app import create_app
    from .logs import configure_logging
    from .transport.uvicorn_ws import EscenarioWebSocketProtocol

    configure_logging(settings.log_level, settings.log_format)
    if settings.redis_url and not settings.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise SystemExit(
            f"--redis-url must start with redis://, rediss:// or unix://, got {settings.redis_url!r}"
        )
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        ws=EscenarioWebSocketProtocol,
        ws_max_size=settings.max_message_bytes,
        # Yjs updates are small binary diffs: compressing them costs CPU on the hot path and
        # saves almost nothing.
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        timeout_graceful_shutdown=10,
        lifespan="on",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="escenario", description="Make music together in the browser.")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            serve(build_settings(args))
        except ValueError as exc:
            print(f"escenario: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
