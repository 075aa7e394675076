"""A real two-node Ray cluster on loopback, started with `ray start` as docs/cluster.md says.

Each node has its own temp dir and its own free ports, and its processes are stopped by their
process ids (never `ray stop`, which would stop every Ray instance on a shared machine). The
head and the other node each get a fresh HOME, so no ~/.ray/auth_token of the machine's user is
read or written, and the token reaches the other node only through the environment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ports(*flags: str) -> list[str]:
    return [f"--{flag}={free_port()}" for flag in flags]


@dataclass
class LoopbackCluster:
    address: str
    token: str
    head_home: Path  # holds .ray/auth_token, as `ray get-auth-token --generate` left it
    node_home: Path  # another machine's HOME: no token file
    temp_dirs: list[Path]

    def env(self, on_head: bool = False, **settings: str) -> dict[str, str]:
        """The environment of a process on the head (its HOME has the token file) or on
        another node: none of the caller's Ray settings, then `settings`."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
        home = self.head_home if on_head else self.node_home
        env.update({"HOME": str(home), "RAY_DISABLE_USAGE_STATS": "1", "PYTHONUNBUFFERED": "1"})
        env.update(settings)
        return env


def _node_processes(temp_dirs: list[Path]) -> list[int]:
    """Process ids of the Ray processes whose command line names one of our temp dirs."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if any(str(d) in cmdline for d in temp_dirs):
            pids.append(int(entry.name))
    return pids


def stop_by_pid(temp_dirs: list[Path], grace_s: float = 5.0) -> None:
    import signal

    pids = _node_processes(temp_dirs)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _node_processes(temp_dirs):
        time.sleep(0.2)
    for pid in _node_processes(temp_dirs):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _ray(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed:\n{done.stderr[-3000:]}")
    return done.stdout


@contextlib.contextmanager
def loopback_cluster() -> Iterator[LoopbackCluster]:
    """A head and one other node on 127.0.0.1, token authentication on, started with the
    docs/cluster.md's commands (plus private temp dirs and ports)."""
    homes = [Path(tempfile.mkdtemp(prefix="pt-home-")) for _ in range(2)]
    # Short paths: Ray's Unix sockets live under the temp dir (a 107-byte limit).
    temp_dirs = [Path(tempfile.mkdtemp(prefix="ptr-h-", dir="/tmp")),
                 Path(tempfile.mkdtemp(prefix="ptr-w-", dir="/tmp"))]
    port = free_port()
    cluster = LoopbackCluster(f"127.0.0.1:{port}", "", homes[0], homes[1], temp_dirs)
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0",
              "--disable-usage-stats"]
    node_ports = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
                  "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")
    try:
        # docs/cluster.md step 1: a token on the head, then the head in token mode.
        cluster.token = _ray([RAY, "get-auth-token", "--generate"], cluster.env(on_head=True))
        _ray([RAY, "start", "--head", f"--port={port}", f"--temp-dir={temp_dirs[0]}",
              "--include-dashboard=false", *common,
              *_ports("ray-client-server-port", "dashboard-port", *node_ports)],
             cluster.env(on_head=True, RAY_AUTH_MODE="token"))
        # Step 2: another node joins with the token in its environment.
        _ray([RAY, "start", f"--address={cluster.address}", f"--temp-dir={temp_dirs[1]}",
              *common, *_ports(*node_ports)],
             cluster.env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=cluster.token))
        yield cluster
    finally:
        stop_by_pid(temp_dirs)
        for directory in [*temp_dirs, *homes]:
            shutil.rmtree(directory, ignore_errors=True)
