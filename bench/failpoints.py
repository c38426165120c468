"""Failpoints: named places where a test can make the process die on purpose.

``BENCH_FAILPOINT=<name>`` kills the process when it reaches ``failpoint(name)``: with SIGKILL
by default, exactly like a power cut or the OOM killer (nothing is flushed, no handler runs),
or with the signal named by ``BENCH_FAILPOINT_SIGNAL`` (``TERM``: what systemd or a person
sends). The crash-injection tests use it to prove that every point of a sequence is
recoverable. Unset (always, in production) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    """Die here if ``BENCH_FAILPOINT`` names this point."""
    if os.environ.get("BENCH_FAILPOINT") == name:
        sig = getattr(signal, "SIG" + os.environ.get("BENCH_FAILPOINT_SIGNAL", "KILL"))
        os.kill(os.getpid(), sig)
