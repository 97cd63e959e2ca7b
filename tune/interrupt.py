"""Stopping a sweep with a signal (Ctrl-C, SIGTERM): an honest record, a clean exit.

The first SIGINT or SIGTERM asks Ray Tune to end the run the way its own Ctrl-C handling
does (one last experiment snapshot; running trials stop at their last epoch checkpoint and
stay unfinished, so `--resume` continues them) and the driver then stops at its next
stage boundary. A second signal stops at once, recording and saying what the first would
have (runs interrupted, the resume line) and stopping the local Ray; `--resume` then
continues from the last snapshot, as after a crash.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

import psutil

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Seconds a second signal waits for the last words (the record and the resume line): they
# may wait on a lock the interrupted code holds, and the exit must come regardless.
LAST_WORDS_S = 15.0


class Interrupted(BaseException):
    """The sweep was stopped by signal `signum`, or by the driver itself for `reason`
    (storage running out); a BaseException, like KeyboardInterrupt, so that no `except
    Exception` on the way treats it as a trial's or a library's error. `at_once`: by a
    second signal, without Tune's last snapshot."""

    def __init__(self, signum: int | None = None, at_once: bool = False, reason: str | None = None):
        self.signum, self.at_once, self.reason = signum, at_once, reason
        super().__init__(self.name)

    @property
    def name(self) -> str:
        return self.reason or signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention for a signal: 128 + it (130 for SIGINT, 143 for SIGTERM);
        1 for a stop of the driver's own (a runtime failure)."""
        return 1 if self.signum is None else 128 + self.signum

    def again(self) -> Interrupted:
        """This stop, made at once by a second signal."""
        return Interrupted(self.signum, at_once=True, reason=self.reason)


class StopSignals:
    """While entered, SIGINT and SIGTERM are recorded rather than fatal. `install()` again
    after `ray.init`, which sets a SIGTERM handler of its own; `check()` at each stage
    boundary raises `Interrupted` once a signal came, or once `stop` was asked (the driver's
    own reason). On a second signal the process ends at once, after `last_words` (given
    the `Interrupted`: record the stop and say how to resume) and after stopping the
    processes it started (a local Ray). `StopSignals.current`: the one entered, if any
    (signal handlers are the process's: one at a time)."""

    current: StopSignals | None = None

    def __init__(self):
        self.received: Interrupted | None = None
        self._previous: dict[int, object] = {}
        self.last_words: Callable[[Interrupted], None] | None = None

    def __enter__(self) -> StopSignals:
        # Tune would install its own SIGINT handler during a fit; this one forwards to it.
        self._tune_sigint = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        self._previous = {s: signal.getsignal(s) for s in SIGNALS}
        self.install()
        StopSignals.current = self
        return self

    def install(self) -> None:
        for signum in SIGNALS:
            signal.signal(signum, self._handle)

    def __exit__(self, *exc) -> None:
        StopSignals.current = None
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._tune_sigint is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = self._tune_sigint

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            self._exit_at_once(self.received.again())
        self.stop(Interrupted(signum), frame)

    def stop(self, why: Interrupted, frame=None) -> None:
        """Stop as a first signal does: Tune's graceful stop now (trials end at their last
        checkpoint, one last snapshot), `Interrupted` at the next check(). A later stop
        changes nothing."""
        if self.received is not None:
            return
        self.received = why
        # During a fit, the SIGUSR1 handler is Tune's graceful stop (the function its own
        # Ctrl-C handling calls); outside a fit it is the default action or a finished
        # fit's, and the stop happens at the next check() instead. A test pins this.
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if callable(tune_stop):
            tune_stop(signal.SIGUSR1, frame)

    def _exit_at_once(self, stop: Interrupted) -> None:
        """End the process now with 128 + the first signal. Nothing is raised: the main
        thread may be inside library code (in Ray's wait an exception became SystemError and
        pages of tracebacks, and the runs stayed RUNNING). The last words run in a thread,
        at most LAST_WORDS_S: this handler runs in the main thread, which may hold a lock
        they need; Ray is stopped by killing this process's children, which takes none."""
        try:
            if self.last_words is not None:
                words = threading.Thread(target=self._say, args=(stop,), daemon=True)
                words.start()
                words.join(LAST_WORDS_S)
                if words.is_alive():
                    _stderr(f"the record of the stop did not finish within {LAST_WORDS_S:g} s; "
                            "--resume continues from the last snapshot all the same")
            kill_children()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, RuntimeError, ValueError):  # a reentrant or closed stream
                    pass
            os._exit(stop.exit_code)

    def _say(self, stop: Interrupted) -> None:
        try:
            self.last_words(stop)
        except Exception as error:  # noqa: BLE001  ending regardless; say what failed
            _stderr(f"while stopping: {type(error).__name__}: {error}")

    def check(self) -> None:
        """Raise `Interrupted` if a signal came or a stop was asked."""
        if self.received is not None:
            raise self.received


def _stderr(line: str) -> None:
    """One line on stderr without Python's buffer, whose lock the interrupted code may hold."""
    os.write(2, (line + "\n").encode(errors="replace"))


def kill_children() -> None:
    """SIGKILL every process this one started (its local Ray's), without waiting or locks."""
    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:  # gone already
            pass
