"""One Horovod rank that says how it was started: the proof that a launch path works end to end.

Every task of a step runs it. It sets Horovod up the way the per-rank task does (`jobs.task`), or
leaves that to the launcher, initialises, allreduces its rank, and prints one line:

    HVD_PROBE {"rank": 0, "size": 4, "mpi": true, "gloo": false, "sum": 6.0, "pmix_rank": "0", ...}

    SUBMITIT_EXECUTOR=slurm srun --mpi=pmix -N 2 --ntasks-per-node=2 --container-image=... \
        python -m tools.hvd_probe --launch pmix
    SUBMITIT_EXECUTOR=slurm srun -N 2 --ntasks-per-node=2 python -m tools.hvd_probe --launch gloo
    horovodrun --gloo -np 2 python -m tools.hvd_probe           (the launcher set Horovod up)
    mpirun -np 2 -x HOROVOD_CONTROLLER=mpi python -m tools.hvd_probe

Under srun the probe reads its place in the job as a rank of the batch script does: through submitit,
which tells the scheduler by `SUBMITIT_EXECUTOR` (the script exports it). `--marker PATH` reports that file's text, or null: a file only a container image holds shows that
the rank runs inside the image. The exit status is non-zero when the allreduce is wrong.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

LAUNCHES = ("launcher", "gloo", "pmix")


def read_marker(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError:
        return None


def probe(launch: str, marker: Path | None) -> dict:
    """Initialise Horovod as `launch` says, allreduce the rank, and describe this rank."""
    server = None
    if launch != "launcher":
        from jobs.task import current_layout, setup_horovod

        server = setup_horovod(current_layout(), launch)  # rank 0 serves Gloo's rendezvous
    import horovod.tensorflow as hvd
    import tensorflow as tf

    hvd.init()
    total = float(hvd.allreduce(tf.constant(float(hvd.rank())), op=hvd.Sum, name="probe_sum").numpy())
    size = hvd.size()
    if server is not None:
        server.shutdown()  # every rank has rendezvoused: the allreduce is done
    return {
        "rank": hvd.rank(), "size": size, "local_rank": hvd.local_rank(),
        "mpi": bool(hvd.mpi_enabled()), "gloo": bool(hvd.gloo_enabled()),
        "sum": total, "expected_sum": float(size * (size - 1) // 2),
        "slurm_procid": os.environ.get("SLURM_PROCID"), "pmix_rank": os.environ.get("PMIX_RANK"),
        "ompi_rank": os.environ.get("OMPI_COMM_WORLD_RANK"),
        "host": socket.gethostname(), "pid": os.getpid(), "root": sorted(os.listdir("/")),
        "marker": read_marker(marker),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.hvd_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--launch", choices=LAUNCHES, default="launcher",
                        help="who sets Horovod up: the launcher (horovodrun, mpirun), or jobs.task's gloo or pmix")
    parser.add_argument("--marker", type=Path, help="a file whose text to report (null when it is not there)")
    args = parser.parse_args(argv)
    record = probe(args.launch, args.marker)
    print("HVD_PROBE " + json.dumps(record), flush=True)
    return 0 if record["sum"] == record["expected_sum"] else 1


if __name__ == "__main__":
    sys.exit(main())
