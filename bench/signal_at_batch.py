"""Train, sending this process SIGUSR2 as the trainer draws a given batch: a checkpoint signal at a
known point, for the restart tests and bench.compile_cache.

    python -m bench.signal_at_batch EPOCH INDEX cli TRAINER_ARGS...    # python -m effnet
    python -m bench.signal_at_batch EPOCH INDEX rank FLAGS_JSON        # one rank through jobs.task

INDEX counts from where the epoch starts or resumes. Index 0 comes as the epoch's pipeline starts,
before its first step; any other index, before the step of that batch, so the run stops after it.
EPOCH -1: no signal.
"""
from __future__ import annotations

import json
import os
import signal
import sys


def signal_at(epoch: int, index: int) -> None:
    """Make the trainer send itself SIGUSR2 as it draws batch `index` of `epoch`."""
    from effnet.train.loop import Trainer

    batches = Trainer._batches

    def signalled(self, at_epoch: int):
        for at_index, batch in enumerate(batches(self, at_epoch)):
            if (at_epoch, at_index) == (epoch, index):
                os.kill(os.getpid(), signal.SIGUSR2)
            yield batch

    Trainer._batches = signalled


def main(argv: list[str]) -> None:
    epoch, index, how, *rest = argv
    if how == "rank":
        import jobs.task as task

        # One rank alone, as submitit's environment would describe it.
        task.current_layout = lambda: task.RankLayout(0, 1, 0, 1, 0, 1, ("localhost",), "1", 0)
        signal_at(int(epoch), int(index))
        task.run_rank(json.loads(rest[0]))
    else:
        from effnet.cli import entrypoint

        signal_at(int(epoch), int(index))
        entrypoint(rest)


if __name__ == "__main__":
    main(sys.argv[1:])
