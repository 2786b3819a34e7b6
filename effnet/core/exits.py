"""Exit statuses and checkpoint-signal names: the contract between the trainer and the batch script.

The trainer exits with one of these; the batch script (rendered by `jobs.render`, run on the host)
reads them to decide whether to requeue. Both sides import them from here, so they cannot drift.
"""
from __future__ import annotations

import signal

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
