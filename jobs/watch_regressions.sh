#!/bin/sh
# Cron entry point of the watcher host: one tick of `watch_regressions`.
#
# Works under cron's environment (no PATH to speak of, /bin/sh, no HOME config): it finds the
# installation by itself, from its own location (<project>/.venv) or from BENCH_VENV, sets a
# sane PATH and locale, and execs `watch_regressions` with the arguments it was given. Configuration
# comes from BENCH_CONFIG (set it in the crontab) or the embedded demo defaults.
# Exit status: that of `watch_regressions` (see README, "Exit codes"); 2 if no installation is found.
set -u

here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd -P) || exit 2
project=$(dirname -- "$here")
venv=${BENCH_VENV:-$project/.venv}
exe=$venv/bin/watch_regressions

if [ ! -x "$exe" ]; then
    echo "watch_regressions.sh: no installation found: $exe is missing." >&2
    echo "watch_regressions.sh: run '$project/dev setup', or set BENCH_VENV to the virtual environment." >&2
    exit 2
fi

PATH=$venv/bin:/usr/local/bin:/usr/bin:/bin
LANG=${LANG:-C.UTF-8}
export PATH LANG
umask 022

# Without a configuration the work directory is the current one: use the project's.
cd "$project" || exit 2
exec "$exe" "$@"
