"""The host-side primitives of the local cluster: its recorded daemons, packages and config files.

`Cluster` is exactly what DIR/state.json records (layout, each daemon's PID and start time, what
it was started with), so `down` and `status` act on what runs, not on what their flags describe.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .slurm_conf import Layout


class ClusterError(RuntimeError):
    pass


def say(text: str) -> None:
    print(f"local_slurm: {text}", flush=True)


# ------------------------------------------------------------------ processes and the state file


def _proc_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [0] the state, [19] the start time in clock ticks."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _alive(daemon: dict) -> bool:
    """Running, not a zombie (PID 1 here reaps orphans slowly), and still the process `up` started:
    the recorded start time guards against a reused PID."""
    fields = _proc_fields(daemon["pid"])
    return len(fields) > 19 and fields[0] != "Z" and int(fields[19]) == daemon["start_ticks"]


@dataclass
class Cluster:
    """A layout and the daemons `up` started for it: exactly what DIR/state.json records, so `down`
    and `status` act on what runs, not on what their own flags would describe."""

    layout: Layout
    daemons: dict[str, dict] = field(default_factory=dict)  # name -> {"pid", "start_ticks", ...}, in start order
    pyxis: bool = False  # enroot and pyxis enabled by the last `up`

    @classmethod
    def load(cls, directory: Path) -> "Cluster | None":
        try:
            state = json.loads(Layout(directory).state_file.read_text())
        except FileNotFoundError:
            return None
        return cls(Layout(Path(state["dir"]), state["nodes"], state["cpus"], state["mem_mb"]), state["daemons"],
                   state.get("pyxis", False))

    def to_json(self) -> dict:
        lay = self.layout
        return {"dir": str(lay.dir), "conf": str(lay.conf), "nodes": lay.nodes, "cpus": lay.cpus,
                "mem_mb": lay.mem_mb, "ports": lay.ports, "daemons": self.daemons, "pyxis": self.pyxis}

    def save(self) -> None:
        """Atomic, and after every start and stop: an interrupted `up` still tells `down` what to stop."""
        write_if_changed(self.layout.state_file, json.dumps(self.to_json(), indent=2) + "\n")

    def running(self, name: str) -> bool:
        return name in self.daemons and _alive(self.daemons[name])

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.layout.conf)}


def start_daemon(cluster: Cluster, name: str, argv: list[str], **record) -> None:
    """Start `argv` unless `name` runs; `record` is kept beside its PID (what it was started with)."""
    if cluster.running(name):
        say(f"{name} already running (pid {cluster.daemons[name]['pid']})")
        return
    with open(cluster.layout.log(name), "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=cluster.env())
    cluster.daemons[name] = {"pid": proc.pid, "start_ticks": int(_proc_fields(proc.pid)[19]), **record}
    cluster.save()
    say(f"started {name} (pid {proc.pid})")


def stop_daemon(cluster: Cluster, name: str) -> None:
    if cluster.running(name):
        pid = cluster.daemons[name]["pid"]
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while cluster.running(name) and time.monotonic() < deadline:
            time.sleep(0.2)
        if cluster.running(name):
            os.kill(pid, signal.SIGKILL)
        say(f"stopped {name} (pid {pid})")
    cluster.daemons.pop(name, None)
    cluster.save()


def wait_until(what: str, check, timeout_s: float, cluster: Cluster) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout_s:.0f} s waiting for {what}; "
                               f"logs in {cluster.layout.dir / 'log'}")
        time.sleep(0.2)


def succeeds(argv: list[str], cluster: Cluster) -> bool:
    return subprocess.run(argv, env=cluster.env(), capture_output=True, text=True).returncode == 0


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# ------------------------------------------------------------------ install and configuration


def installed_package(name: str) -> bool:
    return subprocess.run(["dpkg", "-s", name], capture_output=True).returncode == 0


def install_packages(packages: tuple[str, ...]) -> None:
    missing = [p for p in packages if not installed_package(p)]
    if not missing:
        return
    say(f"installing {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    if path.is_file() and path.read_text() == text:
        return False
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    return True
