"""The demo project's build step: byte-compile ``snoop_demo.py``.

Usage: ``python3 build.py``. Exits 0 when the benchmark program compiles, 1 (with the compiler's
message on stderr) when it does not.
"""

from __future__ import annotations

import py_compile
import sys
from pathlib import Path

SOURCES = ("snoop_demo.py",)


def main() -> int:
    """Compile every source next to this script; return the exit status."""
    here = Path(__file__).resolve().parent
    for name in SOURCES:
        try:
            py_compile.compile(str(here / name), doraise=True)
        except py_compile.PyCompileError as error:
            print(f"build failed: {error.msg.strip()}", file=sys.stderr)
            return 1
        except OSError as error:
            print(f"build failed: cannot compile {name}: {error}", file=sys.stderr)
            return 1
        print(f"compiled {name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
