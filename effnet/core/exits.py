"""Exit statuses and checkpoint-signal names: the contract between the trainer and the batch script.

The trainer exits with one of these; the batch script (rendered by `jobs.render`, run on the host)
reads them to decide whether to requeue. Both sides import them from here, so they cannot drift.
The command-line tools exit through `exit_with`.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Callable, NoReturn

EXIT_OK = 0
# Bad user input (a flag, a config, missing data): one line on stderr. Retrying cannot help.
EXIT_BAD_INPUT = 2
# EX_TEMPFAIL from sysexits.h, "temporary failure; the user is invited to retry": the trainer wrote a
# complete checkpoint on a preemption or time-limit signal and wants to be requeued.
EXIT_REQUEUE = 75

VALID_SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT", "SIGHUP")


def parse_signals(text: str) -> list[signal.Signals]:
    """'SIGUSR2,SIGTERM' -> signals; unknown names are an error listing the valid ones."""
    out = []
    for name in (n.strip().upper() for n in text.split(",") if n.strip()):
        name = name if name.startswith("SIG") else "SIG" + name
        if name not in VALID_SIGNALS:
            raise ValueError(f"unknown checkpoint signal {name}; valid: {', '.join(VALID_SIGNALS)}")
        out.append(signal.Signals[name])
    return out


def exit_with(main: Callable[[], int | None]) -> NoReturn:
    """Run a command-line tool's `main` and exit with its status. A reader that stops early
    (`python -m jobs.submit ... --show | head`) ends the tool quietly with 141, as a shell reports a
    command killed by SIGPIPE, instead of with a BrokenPipeError traceback."""
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout once more at exit: point it at /dev/null so that flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 128 + signal.SIGPIPE
    raise SystemExit(status)
