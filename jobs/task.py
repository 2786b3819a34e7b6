"""The per-rank task: one process per GPU (or CPU rank) under srun or submitit's local executor.

It turns the scheduler's view of the job (rank, node, node list, job id) into Horovod's, then
runs the trainer in this process:

- `gloo`: rank 0 hosts Horovod's rendezvous HTTP server on a port derived from the job id and
  attempt, and the other ranks wait until it accepts connections before `hvd.init()` (Horovod's
  own client gives up after 1.5 s);
- `pmix`: srun --mpi=pmix started MPI ranks; Horovod initialises through MPI.

The trainer pins the GPU by local rank. A checkpoint signal makes it save and exit with 75; a
signal that arrives before the trainer is listening, or during its final evaluation, exits 75 at
once after writing the rank's `signal` stop record (the newest checkpoint is complete), so the
batch script requeues either way and the next attempt resumes. A signal after the trainer wrote
its own stop record keeps that record (a rank that completed exits 0). Once the trainer has
returned, signals are ignored.

    python -m jobs.task [--launch gloo|pmix] -- TRAINER FLAGS...   (what sbatch/*.sub run)
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from effnet.core.exits import EXIT_REQUEUE
from effnet.core.health import HealthFiles, launched_rank, stop_record
from effnet.core.xla_cache import (XLA_FLAGS_VARIABLE, cache_dir, drop_incomplete, tensorflow_version,
                                    with_cache_flag)

if TYPE_CHECKING:
    from effnet.core.config.train import TrainConfig

RENDEZVOUS_TIMEOUT_S = 300
PORT_BASE, PORT_SPAN = 20000, 30000


@dataclass(frozen=True)
class RankLayout:
    rank: int
    size: int
    local_rank: int
    local_size: int
    node: int
    num_nodes: int
    hostnames: tuple[str, ...]
    job_id: str
    restart: int


def current_layout() -> RankLayout:
    """This process's place in the job, from submitit's environment (Slurm or local executor)."""
    import submitit

    env = submitit.JobEnvironment()
    hostnames = tuple(env.hostnames) or (socket.gethostname(),)
    return RankLayout(rank=env.global_rank, size=env.num_tasks, local_rank=env.local_rank,
                      local_size=max(1, env.num_tasks // max(1, env.num_nodes)), node=env.node,
                      num_nodes=env.num_nodes, hostnames=hostnames, job_id=str(env.job_id),
                      restart=int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0))


def rendezvous_port(job_id: str, restart: int) -> int:
    """Same on every rank of an attempt, different across attempts (no TIME_WAIT clash on requeue)."""
    digits = int("".join(c for c in job_id if c.isdigit()) or "0")
    return PORT_BASE + (digits * 7919 + restart * 104729) % PORT_SPAN


def horovod_gloo_env(layout: RankLayout, environ: dict[str, str]) -> dict[str, str]:
    """The HOROVOD_* variables horovodrun would set for this rank."""
    addr = environ.get("HOROVOD_GLOO_RENDEZVOUS_ADDR") or layout.hostnames[0]
    port = environ.get("HOROVOD_GLOO_RENDEZVOUS_PORT") or str(rendezvous_port(layout.job_id, layout.restart))
    return {
        "HOROVOD_RANK": str(layout.rank), "HOROVOD_SIZE": str(layout.size),
        "HOROVOD_LOCAL_RANK": str(layout.local_rank), "HOROVOD_LOCAL_SIZE": str(layout.local_size),
        "HOROVOD_CROSS_RANK": str(layout.node), "HOROVOD_CROSS_SIZE": str(layout.num_nodes),
        # Only names the node-local Gloo scope: equal within a node, different across nodes.
        "HOROVOD_HOSTNAME": layout.hostnames[min(layout.node, len(layout.hostnames) - 1)],
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": addr, "HOROVOD_GLOO_RENDEZVOUS_PORT": port,
        "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo",
    }


def host_assignments(layout: RankLayout) -> str:
    """horovodrun's host string for a block-distributed allocation: 'node1:2,node2:2'."""
    return ",".join(f"{host}:{layout.local_size}" for host in layout.hostnames[:layout.num_nodes])


def start_rendezvous(layout: RankLayout, port: int):
    """Rank 0 serves Horovod's rendezvous (the class horovodrun uses) in a daemon thread."""
    from horovod.runner.common.util.hosts import get_host_assignments, parse_hosts
    from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer

    server = RendezvousHTTPServer(("0.0.0.0", port), RendezvousHandler, 0)
    threading.Thread(target=server.serve_forever, daemon=True, name="hvd-rendezvous").start()
    server.init(get_host_assignments(parse_hosts(host_assignments(layout)), layout.size))
    return server


def wait_for_port(addr: str, port: int, timeout_s: float = RENDEZVOUS_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((addr, port), timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Horovod rendezvous at {addr}:{port} (rank 0) did not answer "
                                   f"within {timeout_s:.0f} s") from None
            time.sleep(0.5)


def setup_horovod(layout: RankLayout, launch: str):
    """Set this process up as Horovod rank `layout.rank`; returns rank 0's server (keep it alive).

    Writes os.environ on purpose: Horovod's C++ core reads HOROVOD_* from the process environment at
    hvd.init() and has no other way in. This runs only in the dedicated rank process (the job itself,
    under srun or submitit's local controller), never in the process that submits."""
    if layout.size <= 1:
        return None
    if launch == "pmix":
        # MPI decides rank and size; HOROVOD_SIZE only tells effnet.dist that it is one of several.
        os.environ.update({"HOROVOD_SIZE": str(layout.size), "HOROVOD_CONTROLLER": "mpi",
                           "HOROVOD_CPU_OPERATIONS": "mpi"})
        return None
    env = horovod_gloo_env(layout, dict(os.environ))
    os.environ.update(env)
    port = int(env["HOROVOD_GLOO_RENDEZVOUS_PORT"])
    server = start_rendezvous(layout, port) if layout.rank == 0 else None
    wait_for_port(env["HOROVOD_GLOO_RENDEZVOUS_ADDR"], port)
    return server


class ExitForRequeue:
    """The handler of a signal that comes while the trainer is not listening: exit 75 at once.

    First it writes this rank's `signal` stop record (no new checkpoint, step unknown), so the batch
    script tells this requeue from a crash. It may interrupt anything, so it writes with os.open and
    os.write: no buffered stream, no lock that the interrupted code could hold."""

    def __init__(self, model_dir: str, rank: int) -> None:
        self.rank, self.host = rank, socket.gethostname()
        self.path = str(HealthFiles(Path(model_dir)).stop(rank))

    def __call__(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        kept = self._written_record()
        if '"reason": "completed"' in kept:
            exit_unflushed(0)  # the rank finished (eval and export included); a late signal does not undo that
        if kept:  # the trainer's own record (its checkpoint, its error) says more than this one could
            os.write(2, f"jobs.task: {name} after this rank stopped; exiting {EXIT_REQUEUE}\n".encode())
            exit_unflushed(EXIT_REQUEUE)
        text = stop_record("signal", self.rank, self.host, None, signal=name, checkpoint=None).encode()
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(self.path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, text)
            os.close(fd)
            os.replace(self.path + ".tmp", self.path)
        except OSError:
            pass
        os.write(2, f"jobs.task: {name} before training started; exiting {EXIT_REQUEUE} for requeue\n".encode())
        exit_unflushed(EXIT_REQUEUE)

    def _written_record(self) -> str:
        """This rank's stop record of this attempt, if the trainer wrote one ('' if none)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return ""
        try:
            return os.read(fd, 65536).decode(errors="replace")
        finally:
            os.close(fd)


def use_xla_cache(config: TrainConfig, rank: int) -> Path | None:
    """With --use_xla, point TensorFlow at this rank's persistent XLA cache (effnet.core.xla_cache),
    so that a requeued or resumed attempt loads the step it compiled before instead of compiling again.

    Writes os.environ on purpose, like setup_horovod: TensorFlow's C++ core reads TF_XLA_FLAGS once,
    from the process environment. This runs in the rank process before TensorFlow is imported."""
    if not config.use_xla:
        return None
    directory = cache_dir(config.model_dir, rank, tensorflow_version())
    for path in drop_incomplete(directory):
        print(f"jobs.task: removed {path.name}, an XLA cache entry cut short", flush=True)
    os.environ[XLA_FLAGS_VARIABLE] = with_cache_flag(os.environ.get(XLA_FLAGS_VARIABLE, ""), directory)
    return directory


def remove_autograph_files() -> None:
    """Remove the modules TensorFlow's autograph wrote to the temp directory for this process. TensorFlow
    removes them at interpreter exit, which os._exit skips: on a shared node's /tmp they would pile up
    with every preemption. It keeps them in sys.modules under their file's name; safe in a signal handler."""
    for name, module in list(sys.modules.items()):
        if name.startswith("__autograph_generated_file"):
            try:
                os.remove(module.__file__)
            except (OSError, AttributeError, TypeError):
                pass


def exit_unflushed(status: int) -> None:
    """os._exit, leaving no autograph file behind; flushes no stream, so a signal handler may call it."""
    remove_autograph_files()
    os._exit(status)


def exit_now(status: int) -> None:
    """Exit without the interpreter's teardown: after a checkpoint signal every record is written and
    every rank has passed the trainer's barrier, and the teardown (Horovod's shutdown negotiation,
    TensorFlow's thread pools) took 2-3 s per rank that the step's end, and so the requeue, waited for."""
    sys.stdout.flush()
    sys.stderr.flush()
    exit_unflushed(status)


def run_rank(trainer_flags: dict, launch: str = "gloo") -> dict | None:
    """Run the trainer as this rank of the job; returns the trainer's summary."""
    from effnet.core.config.train import TrainConfig

    exit_for_requeue = ExitForRequeue(str(trainer_flags.get("model_dir", TrainConfig.model_dir)),
                                      launched_rank(os.environ))
    for sig in (signal.SIGUSR2, signal.SIGTERM):
        signal.signal(sig, exit_for_requeue)
    layout = current_layout()
    server = setup_horovod(layout, launch)
    print(f"jobs.task: rank {layout.rank}/{layout.size} (local {layout.local_rank}, node {layout.node}/"
          f"{layout.num_nodes}) job {layout.job_id} attempt {layout.restart + 1}", flush=True)
    config = TrainConfig.from_flags(**trainer_flags)
    use_xla_cache(config, layout.rank)
    from effnet.cli import run

    try:
        result = run(config)
    except SystemExit as stop:
        if stop.code == EXIT_REQUEUE:
            exit_now(EXIT_REQUEUE)
        raise
    # Done: a late signal (say the time limit during interpreter shutdown) must not turn a finished
    # rank into a failed or requeued one.
    for sig in (signal.SIGUSR2, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    del server
    return result


class RankTask:
    """The callable submitit pickles: the resolved trainer flags and the launch method."""

    def __init__(self, trainer_flags: dict, launch: str) -> None:
        self.trainer_flags = dict(trainer_flags)
        self.launch = launch

    def __call__(self) -> dict | None:
        return run_rank(self.trainer_flags, self.launch)


def main(argv: list[str] | None = None) -> None:
    """`python -m jobs.task [--launch gloo|pmix] -- FLAGS`: the entry point of the raw sbatch scripts."""
    import fire

    from effnet.core.errors import ConfigError

    args = list(sys.argv[1:] if argv is None else argv)
    launch = "gloo"
    if args and args[0].startswith("--launch"):
        launch = args.pop(0).partition("=")[2] or args.pop(0)
    if args and args[0] == "--":
        args.pop(0)
    if launch not in ("gloo", "pmix"):
        print(f"jobs.task: error: --launch {launch!r}: valid: gloo, pmix", file=sys.stderr)
        sys.exit(2)

    def run_with_flags(**flags) -> None:
        try:
            run_rank(flags, launch)
        except ConfigError as err:
            print(f"jobs.task: error: {err}", file=sys.stderr)
            sys.exit(2)

    fire.Fire(run_with_flags, command=args, name="python -m jobs.task")


if __name__ == "__main__":
    main()
