"""When a training run stops early: train.max_minutes, or a signal (Ctrl-C, `kill`, the end of a GPU lease).

A first SIGINT or SIGTERM does not interrupt the step in flight: the loop finishes it, writes a checkpoint at
that step and stops, so `--resume` loses nothing (without this, everything since the last
train.checkpoint_every was lost). A second signal interrupts at once. Under DDP rank 0's clock and signals
decide for every rank, broadcast every train.log_every steps, so all ranks stop after the same step.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

from .setup import DistInfo

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# What `should_stop` returns
RUN_ON, OUT_OF_TIME, SIGNALLED = 0, 1, 2


class StopRequest:
    """Context manager: while inside, the first SIGINT/SIGTERM only sets `signalled` (the loop stops after the
    step); a second raises KeyboardInterrupt. A signal that was ignored when the run started (SIGINT in a
    background job) stays ignored. A no-op outside the main thread."""

    def __init__(self) -> None:
        self.signalled: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signalled is not None:
            raise KeyboardInterrupt
        self.signalled = signum


def should_stop(
    deadline: float | None, stop: StopRequest, step: int, every: int, info: DistInfo, device: torch.device
) -> int:
    """RUN_ON, OUT_OF_TIME (train.max_minutes is over) or SIGNALLED. One process: a signal is seen after every
    step, the clock every `every` steps. Under DDP both are read on rank 0 every `every` steps and broadcast."""
    single = info.world_size == 1
    if single and stop.signalled is not None:
        return SIGNALLED
    if step % every:
        return RUN_ON
    state = RUN_ON
    if stop.signalled is not None:
        state = SIGNALLED
    elif deadline is not None and time.monotonic() > deadline:
        state = OUT_OF_TIME
    if single:
        return state
    flag = torch.tensor(float(state), device=device)
    dist.broadcast(flag, 0)
    return int(flag)
