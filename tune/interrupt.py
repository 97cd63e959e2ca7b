"""Stopping a sweep with a signal (Ctrl-C, SIGTERM): an honest record, a clean exit.

The first SIGINT or SIGTERM asks Ray Tune to end the run the way its own Ctrl-C handling
does (one last experiment snapshot; running trials stop at their last epoch checkpoint and
stay unfinished, so `--resume` continues them) and the driver then stops at its next
stage boundary. A second signal stops at once; `--resume` then continues from the last
snapshot, as after a crash.
"""

from __future__ import annotations

import os
import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The sweep was stopped by signal `signum` (a BaseException, like KeyboardInterrupt,
    so that no `except Exception` on the way treats it as a trial's or a library's error).
    `at_once`: by a second signal, without Tune's last snapshot."""

    def __init__(self, signum: int, at_once: bool = False):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.at_once = at_once

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


class StopSignals:
    """While entered, SIGINT and SIGTERM are recorded rather than fatal. `install()` again
    after `ray.init`, which sets a SIGTERM handler of its own; `check()` at each stage
    boundary raises `Interrupted` once a signal came."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        # Tune would install its own SIGINT handler during a fit; this one forwards to it.
        self._tune_sigint = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        self._previous = {s: signal.getsignal(s) for s in SIGNALS}
        self.install()
        return self

    def install(self) -> None:
        for signum in SIGNALS:
            signal.signal(signum, self._handle)

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._tune_sigint is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._tune_sigint

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            raise Interrupted(self.received, at_once=True)
        self.received = signum
        # During a fit, the SIGUSR1 handler is Tune's graceful stop (the function its own
        # Ctrl-C handling calls); outside a fit it is the default action or a finished
        # fit's, and the stop happens at the next check() instead. A test pins this.
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if callable(tune_stop):
            tune_stop(signal.SIGUSR1, frame)

    def check(self) -> None:
        """Raise `Interrupted` if a signal came."""
        if self.received is not None:
            raise Interrupted(self.received)
