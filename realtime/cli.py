"""`escenario` command line: `serve`, `render`, `keys rotate`, `worker`, `models list|fetch|import`."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Settings, settings_from_env

if TYPE_CHECKING:
    import numpy as np

    from .session.schema import SessionDocument


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
    p.add_argument(
        "--blob-url",
        help="s3://bucket/prefix?endpoint=URL&region=NAME: keep blobs in an S3-compatible bucket "
        "(ESCENARIO_BLOB_URL; default: files in the data dir; credentials: the AWS env vars/profile)",
    )
    p.add_argument("--web-dir", type=Path, help="built web client to serve at / (ESCENARIO_WEB_DIR)")
    p.add_argument("--log-level", help="debug|info|warning|error (ESCENARIO_LOG_LEVEL)")
    p.add_argument("--log-format", choices=["json", "text"], help="ESCENARIO_LOG_FORMAT, default json")
    p.add_argument(
        "--tls-cert", help="PEM certificate (chain) to serve HTTPS/WSS directly (ESCENARIO_TLS_CERT)"
    )
    p.add_argument("--tls-key", help="PEM private key of --tls-cert (ESCENARIO_TLS_KEY)")
    p.add_argument(
        "--dsp-backend",
        choices=["auto", "numba", "cupy"],
        help="mix kernels on the CPU (numba) or a CUDA GPU (cupy, needs the [gpu] extra); "
        "auto picks cupy only when a GPU is usable (ESCENARIO_DSP_BACKEND, default auto)",
    )
    _inference_flags(p, prefix="inference-")


_FORMAT_BY_SUFFIX = {".wav": "wav", ".flac": "flac", ".mp3": "mp3", ".ogg": "ogg", ".opus": "ogg"}


def _render_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "render",
        help="render a session's mix (and stems) to audio files",
        description="Render a session offline from the store, as the mixdown API does.",
    )
    p.add_argument("session_id", metavar="SESSION_ID")
    p.add_argument("-o", "--output", type=Path, help="the mix file to write (format from its suffix)")
    p.add_argument("--format", choices=["wav", "flac", "mp3", "ogg"], help="default: from -o, else wav")
    p.add_argument("--start", type=float, default=0.0, help="start of the range in seconds (default 0)")
    p.add_argument(
        "--end", type=float, help="end of the range in seconds (default: the end of the last clip)"
    )
    p.add_argument("--dither", action="store_true", help="TPDF dither before 24-bit rounding (wav, flac)")
    p.add_argument("--stems", type=Path, metavar="DIR", help="also write one file per track into DIR")
    p.add_argument("--workers", type=int, help="render threads (default: the number of CPUs)")
    p.add_argument(
        "--dsp-backend",
        choices=["auto", "numba", "cupy"],
        help="render on the CPU (numba) or a CUDA GPU (cupy, needs the [gpu] extra); "
        "auto renders on numba until the GPU graph is measured faster (ESCENARIO_DSP_BACKEND, default auto)",
    )
    p.add_argument("--data-dir", type=Path, help="data directory (ESCENARIO_DATA_DIR, default ./var)")
    p.add_argument(
        "--database-url", help="the store (ESCENARIO_DATABASE_URL; default SQLite in the data dir)"
    )
    p.add_argument("--blob-url", help="the S3 blob store, s3://bucket/prefix?… (ESCENARIO_BLOB_URL)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


async def _load_session(
    settings: Settings, session_id: str
) -> tuple[SessionDocument, dict[str, np.ndarray]] | None:
    """The session's document and the samples of its assets, or None if there is no such session."""
    from persistence.blobs import BlobNotFound
    from persistence.encrypted_blobs import BlobIntegrityError, open_encrypted_blobs
    from persistence.factory import open_store

    from .media.decode import MediaError
    from .media.library import load_asset_samples
    from .session.hub import build_doc
    from .session.schema import read_document

    store = await open_store(settings.resolved_database_url, data_dir=settings.data_dir)
    try:
        if len(session_id) > 64 or await store.get_session(session_id) is None:
            return None
        record = await store.load_room(session_id)
        doc = read_document(build_doc(record.snapshot, (u for _, u in record.updates)))
        blobs = await open_encrypted_blobs(settings.data_dir, settings.data_key, settings.blob_url)
        assets: dict[str, np.ndarray] = {}
        for asset_id in sorted({c.asset_id for t in doc.tracks for c in t.clips}):
            asset = await store.get_asset(asset_id) if len(asset_id) <= 64 else None
            if asset is None or asset.session_id != session_id or asset.deleted_at is not None:
                continue
            try:
                assets[asset_id] = await load_asset_samples(blobs, asset)
            except (BlobNotFound, BlobIntegrityError, MediaError) as exc:
                print(f"escenario render: asset {asset_id} is unreadable ({exc}); silent", file=sys.stderr)
        return doc, assets
    finally:
        await store.close()


class _ProgressLine:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self._shown = -1

    def __call__(self, fraction: float) -> None:
        if not self.enabled:
            return
        percent = math.floor(fraction * 100)
        if self.tty:
            print(f"\rrendering {percent:3d}%", end="", file=sys.stderr, flush=True)
        elif percent // 10 > self._shown // 10 or percent == 100:
            print(f"rendering {percent:3d}%", file=sys.stderr, flush=True)
        self._shown = percent

    def done(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)


def render(args: argparse.Namespace) -> int:
    """`escenario render`: 0 on success, 1 when the session or render fails, 2 for bad arguments."""
    settings = settings_from_env().replace(
        data_dir=args.data_dir, database_url=args.database_url, blob_url=args.blob_url
    )
    if args.output is None and args.stems is None:
        print("escenario render: give -o FILE and/or --stems DIR", file=sys.stderr)
        return 2
    fmt = args.format
    if fmt is None:
        suffix = args.output.suffix.lower() if args.output is not None else ""
        fmt = _FORMAT_BY_SUFFIX.get(suffix, "wav")
    if not (math.isfinite(args.start) and args.start >= 0):
        print("escenario render: --start must be a number of seconds >= 0", file=sys.stderr)
        return 2
    if args.end is not None and not (math.isfinite(args.end) and args.end > args.start):
        print("escenario render: --end must be after --start", file=sys.stderr)
        return 2
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        print("escenario render: --workers must be >= 1", file=sys.stderr)
        return 2
    from .dsp.backend import BackendUnavailable, make_graph, use_backend

    backend = args.dsp_backend or settings.dsp_backend
    try:
        make_graph(backend, None).close()  # cupy: cupy, numba's CUDA target and a device, or why not
        use_backend(backend)
    except (ValueError, BackendUnavailable) as exc:
        print(f"escenario render: {exc}", file=sys.stderr)
        return 2

    from .media.mixdown import MIXDOWN_FORMATS, render_files

    if not MIXDOWN_FORMATS[fmt].available:
        print(f"escenario render: this FFmpeg build cannot encode {fmt}", file=sys.stderr)
        return 2
    try:
        loaded = asyncio.run(_load_session(settings, args.session_id))
    except (OSError, ValueError) as exc:
        print(f"escenario render: cannot open the store: {exc}", file=sys.stderr)
        return 1
    if loaded is None:
        print(
            f"escenario render: no session {args.session_id!r} in {settings.resolved_database_url}",
            file=sys.stderr,
        )
        return 1
    doc, assets = loaded
    from .dsp.render import plan_render

    try:
        plan = plan_render(
            doc, lambda a: assets[a].shape[-1] if a in assets else None, start_s=args.start, end_s=args.end
        )
    except ValueError as exc:
        print(f"escenario render: {exc}", file=sys.stderr)
        return 2
    if plan.frames == 0:
        print(
            "escenario render: nothing to render (no clips after --start; give --end to render silence)",
            file=sys.stderr,
        )
        return 1
    progress = _ProgressLine(not args.quiet)
    try:
        plan = render_files(
            doc,
            assets,
            fmt,
            mix=args.output,
            stems_dir=args.stems,
            start_s=args.start,
            end_s=args.end,
            dither=args.dither,
            workers=workers,
            progress=progress,
        )
    except (ValueError, OSError) as exc:
        progress.done()
        print(f"escenario render: {exc}", file=sys.stderr)
        return 1
    progress.done()
    if not args.quiet:
        where = ", ".join(str(p) for p in (args.output, args.stems) if p is not None)
        print(f"rendered {plan.duration_s:.2f} s to {where}", file=sys.stderr)
    return 0


def _keys_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keys", help="manage the data keys of encryption at rest")
    keys_sub = p.add_subparsers(dest="keys_command", required=True)
    rotate = keys_sub.add_parser(
        "rotate",
        help="add a new active key and re-encrypt every blob with it (safe while the server runs)",
        description="Add a fresh key to the keyring (ESCENARIO_DATA_KEY, default "
        "DATA_DIR/keys/keyring.json), make it active (older keys stay for reading) "
        "and re-encrypt every blob under it.",
    )
    rotate.add_argument("--data-dir", type=Path, help="data directory (ESCENARIO_DATA_DIR, default ./var)")
    rotate.add_argument(
        "--blob-url",
        help="s3://bucket/prefix?endpoint=URL&region=NAME: keep blobs in an S3-compatible bucket "
        "(ESCENARIO_BLOB_URL; default: files in the data dir; credentials: the AWS env vars/profile)",
    )
    rotate.add_argument("--quiet", action="store_true", help="no progress on stderr")


async def _rotate(settings: Settings, quiet: bool) -> int:
    from persistence.encrypted_blobs import (
        keyring_path,
        open_encrypted_blobs,
        reencrypt_all,
        rotate_keyring,
    )

    store = await open_encrypted_blobs(settings.data_dir, settings.data_key, settings.blob_url)
    path = keyring_path(settings.data_dir, settings.data_key)
    store.keyring = await asyncio.to_thread(rotate_keyring, path)
    if not quiet:
        print(f"new active key {store.keyring.active} in {path}", file=sys.stderr)

    def progress(done: int, total: int, key: str, changed: bool) -> None:
        if not quiet:
            print(
                f"[{done}/{total}] {key}: {'re-encrypted' if changed else 'already current'}", file=sys.stderr
            )

    count = await reencrypt_all(store, progress)
    if not quiet:
        print(f"re-encrypted {count} blob(s) with key {store.keyring.active}", file=sys.stderr)
    return 0


def keys(args: argparse.Namespace) -> int:
    """`escenario keys rotate`: 0 on success, 1 when the keyring or a blob cannot be handled."""
    from persistence.encrypted_blobs import BlobIntegrityError, KeyringError

    settings = settings_from_env().replace(data_dir=args.data_dir, blob_url=args.blob_url)
    try:
        return asyncio.run(_rotate(settings, args.quiet))
    except (KeyringError, BlobIntegrityError, OSError, ValueError) as exc:
        print(f"escenario keys rotate: {exc}", file=sys.stderr)
        return 1


def _inference_flags(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """The pool's flags: `--device` etc. for `worker`, `--inference-device` etc. for `serve`."""
    p.add_argument("--models-dir", help="separation models (ESCENARIO_MODELS_DIR; default DATA_DIR/models)")
    p.add_argument(
        f"--{prefix}device",
        dest="inference_device",
        help="auto (one worker per GPU, else CPU workers), cpu or cuda:N (ESCENARIO_INFERENCE_DEVICE)",
    )
    p.add_argument(
        f"--{prefix}workers",
        dest="inference_workers",
        type=int,
        help="CPU worker processes; 0: none here (ESCENARIO_INFERENCE_WORKERS, default 1)",
    )
    p.add_argument(
        f"--{prefix}threads",
        dest="inference_threads",
        type=int,
        help="torch/onnxruntime threads per worker; 0: automatic (ESCENARIO_INFERENCE_THREADS, default 0)",
    )
    p.add_argument(
        f"--{prefix}max-batch",
        dest="inference_max_batch",
        type=int,
        help="segments per separation forward pass (0: 1 on a CPU, 8 on a GPU)",
    )
    p.add_argument(
        f"--{prefix}precision",
        dest="inference_precision",
        choices=["fp32", "bf16"],
        help="fp32 (TF32 on a GPU) or bf16",
    )


def _worker_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "worker",
        help="run inference jobs from the Redis job queue (scale-out, e.g. on a GPU machine)",
        description="Serve the job queue that `escenario serve --redis-url` fills. The worker reads "
        "the same database and data directory (blob store and keyring) as the servers.",
    )
    p.add_argument("--redis-url", help="redis://host:6379/0, the servers' queue (ESCENARIO_REDIS_URL)")
    p.add_argument("--data-dir", type=Path, help="the servers' data directory (ESCENARIO_DATA_DIR)")
    p.add_argument("--database-url", help="the servers' database (ESCENARIO_DATABASE_URL)")
    p.add_argument(
        "--blob-url",
        help="the servers' S3 blob store, s3://bucket/prefix?endpoint=…; needs ESCENARIO_DATA_KEY, "
        "a copy of the servers' keyring (ESCENARIO_BLOB_URL; default: DATA_DIR/blobs)",
    )
    p.add_argument("--queue-prefix", dest="job_queue_prefix", help="Redis key prefix (default escenario)")
    p.add_argument("--log-level", help="debug|info|warning|error (ESCENARIO_LOG_LEVEL)")
    p.add_argument("--log-format", choices=["json", "text"], help="ESCENARIO_LOG_FORMAT, default json")
    _inference_flags(p)


def worker(args: argparse.Namespace) -> int:
    """`escenario worker`: 0 after a clean stop (SIGTERM/SIGINT), 1 when it cannot start."""
    import signal

    from inference.executor import run_standalone
    from inference.queue import QueueError

    from .logs import configure_logging

    settings = settings_from_env().replace(
        **{k: getattr(args, k) for k in _SETTING_FLAGS if getattr(args, k, None) is not None}
    )
    configure_logging(settings.log_level, settings.log_format)
    from inference.pool import check_pool_settings

    try:
        check_pool_settings(
            device=settings.inference_device,
            workers=settings.inference_workers,
            threads=settings.inference_threads,
            max_batch=settings.inference_max_batch,
            precision=settings.inference_precision,
        )
    except ValueError as exc:
        print(f"escenario worker: {exc}", file=sys.stderr)
        return 2
    if not settings.redis_url:
        print(
            "escenario worker: give --redis-url (the queue `escenario serve --redis-url` fills)",
            file=sys.stderr,
        )
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_standalone(settings, stop)

    try:
        asyncio.run(run())
    except (QueueError, OSError, ValueError) as exc:
        print(f"escenario worker: {exc}", file=sys.stderr)
        return 1
    return 0


_SETTING_FLAGS = (
    "redis_url",
    "blob_url",
    "data_dir",
    "database_url",
    "job_queue_prefix",
    "log_level",
    "log_format",
    "models_dir",
    "inference_device",
    "inference_workers",
    "inference_threads",
    "inference_max_batch",
    "inference_precision",
)


def _models_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="list, fetch or import separation models")
    models_sub = p.add_subparsers(dest="models_command", required=True)
    for name, text in (
        ("list", "the models installed in the models folder"),
        ("fetch", "download a model with demucs' hub layout (needs network access) and install it"),
        ("import", "install model files (<name>.yaml and its .th/.safetensors) from a folder or file"),
    ):
        q = models_sub.add_parser(name, help=text, description=text)
        if name == "fetch":
            q.add_argument("name", metavar="NAME", help="e.g. htdemucs, htdemucs_ft, htdemucs_6s")
        elif name == "import":
            q.add_argument("path", metavar="PATH", type=Path)
            q.add_argument("--replace", action="store_true", help="overwrite files of the same signature")
        q.add_argument(
            "--models-dir", help="the models folder (ESCENARIO_MODELS_DIR; default DATA_DIR/models)"
        )
        q.add_argument("--data-dir", type=Path, help="data directory (ESCENARIO_DATA_DIR, default ./var)")


def models(args: argparse.Namespace) -> int:
    """`escenario models …`: 0 on success, 1 when the models folder refuses the operation."""
    from inference.models import ModelError, ModelStore

    settings = settings_from_env().replace(data_dir=args.data_dir, models_dir=args.models_dir)
    store = ModelStore(settings.resolved_models_dir)
    try:
        if args.models_command == "list":
            found = store.list()
            if not found:
                print(
                    f"no models in {store.models_dir}; install one with `escenario models fetch htdemucs` "
                    "or `escenario models import PATH`"
                )
            for info in found:
                state = "ok" if info.complete else "; ".join(info.problems)
                print(f"{info.name}\t{info.size_bytes / 1e6:.1f} MB\t{state}")
            print(f"transcription (basic-pitch ICASSP-2022, ONNX)\t{_transcription_model_state()}")
        elif args.models_command == "fetch":
            path = store.fetch(args.name, progress=lambda msg: print(msg, file=sys.stderr))
            print(f"installed {args.name} ({path})")
        else:
            names = store.import_path(args.path, replace=args.replace)
            print(f"installed {', '.join(names)} into {store.models_dir}")
    except ModelError as exc:
        print(f"escenario models {args.models_command}: {exc}", file=sys.stderr)
        return 1
    return 0


def _transcription_model_state() -> str:
    from inference.transcribe import default_model_path

    try:
        return f"ok ({default_model_path()})"
    except RuntimeError as exc:
        return str(exc)


def build_settings(args: argparse.Namespace) -> Settings:
    settings = settings_from_env()
    return settings.replace(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        database_url=args.database_url,
        redis_url=args.redis_url,
        blob_url=args.blob_url,
        web_dir=args.web_dir,
        log_level=args.log_level,
        log_format=args.log_format,
        dsp_backend=args.dsp_backend,
        models_dir=args.models_dir,
        inference_device=args.inference_device,
        inference_workers=args.inference_workers,
        inference_threads=args.inference_threads,
        inference_max_batch=args.inference_max_batch,
        inference_precision=args.inference_precision,
        tls_cert=getattr(args, "tls_cert", None),
        tls_key=getattr(args, "tls_key", None),
    )


def tls_options(settings: Settings) -> dict[str, str]:
    """uvicorn's TLS arguments; `SystemExit` with the reason for a half or missing pair."""
    cert, key = settings.tls_cert, settings.tls_key
    if not cert and not key:
        return {}
    if not cert or not key:
        raise SystemExit("escenario serve: --tls-cert and --tls-key go together")
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not Path(path).is_file():
            raise SystemExit(f"escenario serve: {flag} {path}: no such file")
    return {"ssl_certfile": cert, "ssl_keyfile": key}


def serve(settings: Settings) -> None:
    import uvicorn

    from .app import create_app
    from .dsp.backend import BackendUnavailable, select_backend, use_backend
    from .logs import configure_logging
    from .transport.uvicorn_ws import EscenarioWebSocketProtocol

    configure_logging(settings.log_level, settings.log_format)
    try:
        use_backend(settings.dsp_backend)  # renders follow it: auto keeps its fallback to the CPU
        settings = settings.replace(dsp_backend=select_backend(settings.dsp_backend))
    except (ValueError, BackendUnavailable) as exc:
        raise SystemExit(f"escenario serve: {exc}") from exc
    if settings.redis_url and not settings.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise SystemExit(
            f"--redis-url must start with redis://, rediss:// or unix://, got {settings.redis_url!r}"
        )
    from inference.pool import check_pool_settings

    check_pool_settings(
        device=settings.inference_device,
        workers=settings.inference_workers,
        threads=settings.inference_threads,
        max_batch=settings.inference_max_batch,
        precision=settings.inference_precision,
    )
    tls = tls_options(settings)
    if tls:
        settings = settings.replace(cookie_secure=True)  # cookies only ever travel over TLS
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=tls.get("ssl_certfile"),
        ssl_keyfile=tls.get("ssl_keyfile"),
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
    _render_parser(sub)
    _keys_parser(sub)
    _worker_parser(sub)
    _models_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "render":
        return render(args)
    if args.command == "keys":
        return keys(args)
    if args.command == "worker":
        return worker(args)
    if args.command == "models":
        return models(args)
    if args.command == "serve":
        try:
            serve(build_settings(args))
        except ValueError as exc:
            print(f"escenario: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
