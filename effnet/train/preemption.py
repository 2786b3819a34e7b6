"""Checkpoint-and-exit on a signal, so a scheduler can preempt and requeue the job safely.

A handler only sets a flag; the training loop checks it at the next step boundary (all ranks
agree through an allreduce), rank 0 writes a complete checkpoint, and every rank exits with
`EXIT_REQUEUE` (see `effnet.core.exits`). A launcher that sees that status requeues the job;
any other non-zero status is a real failure.
"""
from __future__ import annotations

import signal
import time
from typing import Iterable


class PreemptionFlag:
    """Set by any of `signals`; `requested` tells the loop to checkpoint and exit."""

    def __init__(self, signals: Iterable[signal.Signals]) -> None:
        self.received: signal.Signals | None = None
        self.received_at: float | None = None
        self._previous = {}
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received_at = time.time()
        self.received = signal.Signals(signum)

    @property
    def requested(self) -> bool:
        return self.received is not None

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
