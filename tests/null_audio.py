"""A private PulseAudio server with one null sink: an audio device for headless Firefox.

Firefox keeps every AudioContext `suspended` when it cannot open an output stream, and a CI
machine has no sound card. Chromium fakes its output; Firefox needs a server to talk to. This
one runs as a child of the test (its own process group), loads no default script, accepts
anonymous clients on a socket in a temporary directory and writes nothing outside it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PULSEAUDIO = "pulseaudio"


class NullAudioError(RuntimeError):
    """The sound server did not start."""


def available() -> bool:
    return shutil.which(PULSEAUDIO) is not None


@dataclass
class NullSink:
    """`pulseaudio` with a null sink, serving on `<directory>/pulse.sock`."""

    directory: Path
    start_timeout: float = 15.0
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.directory / "pulse.sock"

    @property
    def client_env(self) -> dict[str, str]:
        """What a client's environment needs to play into this server."""
        return {"PULSE_SERVER": f"unix:{self.socket_path}"}

    def start(self) -> None:
        exe = shutil.which(PULSEAUDIO)
        if exe is None:
            raise NullAudioError(f"{PULSEAUDIO} is not installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        log_path = self.directory / "pulseaudio.log"
        with log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    exe,
                    "--daemonize=no",
                    "-n",  # no default.pa: only the two modules below
                    "--exit-idle-time=-1",
                    "--use-pid-file=no",
                    "--load=module-null-sink sink_name=null",
                    f"--load=module-native-protocol-unix auth-anonymous=1 socket={self.socket_path}",
                ],
                stdout=log,
                stderr=log,
                # its own home and runtime dir: the cookie and state files land here
                env={**os.environ, "HOME": str(self.directory), "XDG_RUNTIME_DIR": str(self.directory)},
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while not self._listening():
            if self._proc.poll() is not None:
                raise NullAudioError(
                    f"{PULSEAUDIO} exited with {self._proc.returncode}: {log_path.read_text()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise NullAudioError(f"{PULSEAUDIO} never listened: {log_path.read_text()}")
            time.sleep(0.05)

    def _listening(self) -> bool:
        if not self.socket_path.exists():
            return False
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(self.socket_path))
            except OSError:
                return False
        return True

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(10)
