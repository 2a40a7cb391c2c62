"""Server settings: defaults, then `ESCENARIO_*` environment variables, then CLI flags."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

_REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("./var")
    # Empty means the embedded default: SQLite in the data directory.
    database_url: str = ""
    # Scale-out backends (broker, job queue) use Redis when this is set; empty means in-process.
    redis_url: str = ""
    web_dir: Path = field(default_factory=lambda: _REPO_ROOT / "web_client" / "dist")
    log_level: str = "info"
    log_format: str = "json"  # json | text
    # auto | numba | cupy; `serve` resolves auto to what this machine can run.
    dsp_backend: str = "auto"
    # Keyring file for encryption at rest; empty means data_dir/keys/keyring.json, made on first run.
    data_key: str = ""
    # Where blobs (audio) live: empty means files under data_dir/blobs; s3://bucket/prefix?endpoint=…
    # &region=… an S3-compatible bucket shared with remote workers (credentials: standard AWS env/profile).
    blob_url: str = ""

    # accounts
    token_ttl_s: int = 30 * 24 * 3600
    cookie_secure: bool = False
    # HTTPS/WSS served directly (PEM files; both or neither). With them, cookies are Secure.
    tls_cert: str = ""
    tls_key: str = ""

    # sync limits
    max_message_bytes: int = 16 * 1024 * 1024
    max_pending_bytes: int = 4 * 1024 * 1024
    send_queue_bytes: int = 32 * 1024 * 1024
    connects_per_minute_per_ip: int = 600
    messages_per_second: float = 1000.0
    message_burst: int = 5000
    max_connections_per_user: int = 64
    # WebSocket keep-alive: a peer that answers no ping within the timeout is dropped, which
    # also frees a laggard that stopped reading altogether.
    ws_ping_interval_s: float = 20.0
    ws_ping_timeout_s: float = 20.0
    # Adaptive broadcast batching window (see HubConfig.batch_window_s); 0 disables it.
    sync_batch_window_ms: float = 4.0
    compact_after_rows: int = 500
    unload_grace_s: float = 30.0

    # live jam over WebRTC (POST /api/sessions/{id}/jam/webrtc)
    # Comma-separated stun: URLs for aiortc's ICE; empty: host candidates only (no lookups).
    jam_webrtc_ice_servers: str = ""
    # A peer from which nothing at all (audio, control, RTCP, SCTP) arrives for this long leaves.
    jam_webrtc_inactivity_s: float = 5.0
    # A peer whose ICE/DTLS is not up this long after its offer was answered is dropped.
    jam_webrtc_connect_timeout_s: float = 20.0
    jam_webrtc_max_peers_per_user: int = 8
    # Offer 127.0.0.1 ICE candidates too (aioice skips loopback): for loopback-only namespaces.
    jam_webrtc_loopback_candidates: bool = False

    # assets
    max_upload_bytes: int = 500 * 1024 * 1024
    max_asset_duration_s: float = 3 * 3600.0
    # Decoded asset audio kept in memory for rendering (float32 at 48 kHz: ~23 MiB per stereo minute).
    asset_cache_bytes: int = 512 * 1024 * 1024

    # rendering
    # Longest timeline range a mixdown may render (longer requests get 422 range_too_long).
    max_render_s: float = 2 * 3600.0
    # Threads one mixdown renders on (source tracks of each block in parallel).
    render_workers: int = 1
    # Mixdowns rendering at once; more wait as "queued" jobs (each holds a worker thread).
    max_concurrent_renders: int = 2

    # live jam (realtime/jam): block size in samples at 48 kHz (120 = 2.5 ms; 240, 480 are safer)
    jam_block: int = 120
    jam_bitrate: int = 128_000
    jam_complexity: int = 5
    jam_max_participants: int = 128
    # Undelivered ticks per jam between the tick thread and the event loop; older audio is
    # dropped beyond it.
    jam_send_queue_frames: int = 40
    # Unsent bytes a jam socket may hold before its audio is dropped; behind for jam_laggard_s: closed.
    jam_send_buffer_bytes: int = 64 * 1024
    jam_laggard_s: float = 1.0
    jam_fade_in_s: float = 3.0
    # SCHED_FIFO priority of each jam's tick thread (1-99; 0: normal priority). Needs
    # CAP_SYS_NICE or an RLIMIT_RTPRIO; without it the jam runs at normal priority and logs why.
    jam_realtime_priority: int = 10
    # Nice value of the event loop's thread once a jam runs (0: leave it); needs CAP_SYS_NICE.
    jam_loop_nice: int = -10
    # The interpreter's GIL switch interval while a jam runs (seconds; never raised by the jam).
    jam_switch_interval_s: float = 0.0005
    # Read senders' /jam sockets on the tick thread, not the event loop (decision 0019).
    jam_tick_reads: bool = True
    # … and the tick sends the mixes to the sockets it reads itself (needs jam_tick_reads).
    jam_tick_writes: bool = True
    # While a jam runs, ask that idle CPUs wake within this many µs (PM QoS through
    # /dev/cpu_dma_latency, needs root; 0 keeps them from idling deeply); -1: off.
    jam_cpu_latency_us: int = -1
    # Inbound audio frames per second and connection (a 2.5 ms stream sends 400).
    jam_frames_per_second: float = 2000.0
    # Sessions that get their own labelled series on /metrics (the rest only count in the totals).
    jam_metrics_max_sessions: int = 20
    # Bearer token GET /metrics requires; empty: open (bind to a private address or set one).
    metrics_token: str = ""

    # inference (issue 5)
    # Separation models (demucs .yaml/.th/.safetensors); empty means data_dir/models.
    models_dir: str = ""
    # CPU worker processes of the in-process pool (one per GPU instead when a GPU is used);
    # 0 runs none here: jobs wait for `escenario worker` processes on the Redis queue.
    inference_workers: int = 1
    # auto (one worker per GPU, else CPU workers) | cpu | cuda:N
    inference_device: str = "auto"
    # Torch/onnxruntime threads per worker; 0: every core for SCHED_IDLE CPU workers (they only
    # get CPU time nothing else wants), a core left free otherwise, 1 per GPU worker.
    inference_threads: int = 0
    # Segments per separation forward pass; 0: 1 on a CPU (batching does not pay there), 8 on a GPU.
    inference_max_batch: int = 0
    # fp32 (TF32 on a GPU) | bf16
    inference_precision: str = "fp32"
    # Namespace of the job queue's Redis keys (servers and workers that share a queue agree on it).
    job_queue_prefix: str = "escenario"

    # trust and privacy (issue 7; docs/privacy.md)
    # Seconds between retention runs (source purges, hard deletions, IP anonymisation); 0: never.
    retention_interval_s: float = 300.0
    # An uploaded source's audio is purged this long after its processing completed.
    retention_source_s: float = 24 * 3600.0
    # Deleted sessions and assets stay restorable this long, then are hard-deleted; 0: at once.
    deletion_grace_s: float = 7 * 24 * 3600.0
    # IP addresses in the audit log are cleared this long after the entry was written.
    log_ip_retention_s: float = 90 * 24 * 3600.0
    # Bearer token of GET /api/training/assets (a training pipeline); empty: the endpoint is off (404).
    training_token: str = ""

    @property
    def resolved_models_dir(self) -> Path:
        return Path(self.models_dir) if self.models_dir else self.data_dir / "models"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'escenario.db').resolve()}"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _coerce(kind: Any, raw: str, name: str) -> Any:
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    try:
        if kind_name == "int":
            return int(raw)
        if kind_name == "float":
            return float(raw)
        if kind_name == "bool":
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(raw)
        if kind_name == "Path":
            return Path(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} is not a valid {kind_name}") from exc
    return raw


def settings_from_env(env: Mapping[str, str] | None = None, base: Settings | None = None) -> Settings:
    """Overlay `ESCENARIO_<FIELD>` variables (upper case) on `base` (defaults if None)."""
    env = os.environ if env is None else env
    base = base or Settings()
    changes: dict[str, Any] = {}
    for f in fields(Settings):
        name = f"ESCENARIO_{f.name.upper()}"
        if name in env:
            changes[f.name] = _coerce(f.type, env[name], name)
    return base.replace(**changes)
