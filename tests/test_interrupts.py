"""Tests of bench.interrupts: SIGTERM/SIGINT as InterruptedRun, kept while a Hold is on."""

from __future__ import annotations

import logging
import os
import signal
import threading

import pytest

from bench.errors import InterruptedRun
from bench.interrupts import Hold, raised_on_signals


def sigterm_self() -> None:
    """SIGTERM to this process; Python runs the handler before os.kill returns."""
    os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_signal_raises_interrupted_run_naming_it(sig: signal.Signals) -> None:
    with raised_on_signals(), pytest.raises(InterruptedRun, match=f"interrupted by {sig.name}"):
        os.kill(os.getpid(), sig)


def test_later_signals_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """The first signal starts the stop; a second one must not break the clean-up under way."""
    with raised_on_signals():
        with pytest.raises(InterruptedRun):
            sigterm_self()
        with caplog.at_level(logging.WARNING, logger="bench.interrupts"):
            os.kill(os.getpid(), signal.SIGINT)
    assert "SIGINT received again: already stopping" in caplog.text


def test_the_previous_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with raised_on_signals():
        assert signal.getsignal(signal.SIGTERM) is not before[0]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_an_interrupt_under_a_hold_waits_for_its_release() -> None:
    reached: list[str] = []
    with raised_on_signals():
        hold = Hold().__enter__()
        sigterm_self()
        reached.append("after the signal")
        with pytest.raises(InterruptedRun, match="SIGTERM"):
            hold.release()
        hold.release()  # a second release does nothing: the interrupt was raised once
        hold.__exit__(None, None, None)
    assert reached == ["after the signal"]


def test_nested_holds_keep_the_interrupt_until_the_outer_one_ends() -> None:
    with raised_on_signals(), pytest.raises(InterruptedRun) as raised, Hold():
        with Hold():
            sigterm_self()
        raised_at = "outer"  # the inner release did not raise
    assert raised_at == "outer"
    assert "SIGTERM" in str(raised.value)


def test_a_block_that_fails_under_a_hold_still_raises_the_kept_interrupt() -> None:
    """The supervisor stops the group on the failure; the interrupt then goes on, with context."""
    with raised_on_signals(), pytest.raises(InterruptedRun) as raised, Hold():
        sigterm_self()
        raise OSError("cannot start the pump thread")
    assert isinstance(raised.value.__context__, OSError)


def test_without_an_interrupt_a_hold_changes_nothing() -> None:
    with raised_on_signals():
        with Hold() as hold:
            hold.release()
        with pytest.raises(InterruptedRun):  # no hold is left behind: raised at once
            sigterm_self()


def test_a_hold_in_another_thread_does_not_delay_the_main_thread() -> None:
    """Only the main thread runs signal handlers: a worker's hold must not swallow a signal."""
    holding, done = threading.Event(), threading.Event()

    def worker() -> None:
        with Hold():
            holding.set()
            done.wait(30)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert holding.wait(30)
        with raised_on_signals(), pytest.raises(InterruptedRun):
            sigterm_self()
    finally:
        done.set()
        thread.join()
