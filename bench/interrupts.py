"""SIGTERM and SIGINT stop a run by raising one exception, held back where it would orphan a child.

A run is stopped by raising :class:`InterruptedRun` from the signal handler, so that every
``finally`` on the way out leaves its state recoverable. Python raises it wherever the main
thread happens to be, and one place cannot take it: between the ``fork`` of a step's command
and the moment the supervisor holds the child's pid inside its ``try``. Raised there (from
inside ``subprocess.Popen``, say), it would leave the whole process group running after the run
has ended. Such a stretch runs under a :class:`Hold`: an interrupt arriving in it is kept and
raised by :meth:`Hold.release`, where the supervisor can stop the group.

Only the main thread runs Python signal handlers, so only its holds count.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

from bench.errors import InterruptedRun

log = logging.getLogger(__name__)


class _Gate:
    def __init__(self) -> None:
        self.holds = 0
        self.pending: InterruptedRun | None = None


_gate = _Gate()


class Hold:
    """A context: interrupts are kept from its start until :meth:`release` or its end.

    Leaving the block releases the hold, so that a kept interrupt is raised even when the
    block fails (it then carries that failure as its context). Main thread only: elsewhere
    the hold does nothing, as no signal handler runs there.
    """

    def __init__(self) -> None:
        self._active = False

    def __enter__(self) -> Hold:
        if threading.current_thread() is threading.main_thread():
            self._active = True
            _gate.holds += 1
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

    def release(self) -> None:
        """End the hold (once; later calls do nothing), then raise an interrupt that was kept."""
        if not self._active:
            return
        self._active = False
        _gate.holds -= 1
        if _gate.holds == 0 and _gate.pending is not None:
            pending, _gate.pending = _gate.pending, None
            raise pending


def _deliver(exc: InterruptedRun) -> None:
    if _gate.holds:
        log.info("%s: stopping once the step being started can be stopped with it", exc)
        _gate.pending = exc
        return
    raise exc


@contextlib.contextmanager
def raised_on_signals() -> Iterator[None]:
    """SIGTERM/SIGINT raise :class:`InterruptedRun` once; later ones are logged and ignored."""
    fired: list[str] = []

    def handler(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if fired:
            log.warning("%s received again: already stopping", name)
            return
        fired.append(name)
        _deliver(InterruptedRun(f"interrupted by {name}"))

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
