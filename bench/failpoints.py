"""Failpoints: named places where a test can make the process die on purpose.

``BENCH_FAILPOINT=<name>`` kills the process with SIGKILL when it reaches ``failpoint(name)``,
exactly like a power cut or the OOM killer would: nothing is flushed, no handler runs. The
crash-injection tests use it to prove that every point of a sequence is recoverable. Unset
(always, in production) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    """Die here if ``BENCH_FAILPOINT`` names this point."""
    if os.environ.get("BENCH_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
