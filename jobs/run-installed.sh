#!/bin/sh
# Shared by the cron entry points: run one of the installation's commands under cron.
#
#   run-installed.sh COMMAND [ARGS...]
#
# Works under cron's environment (no PATH to speak of, /bin/sh, no HOME config): it finds the
# installation by itself, from its own location (<project>/.venv) or from BENCH_VENV, sets a
# sane PATH and locale, and execs COMMAND with the arguments. Configuration comes from
# BENCH_CONFIG (set it in the crontab) or the embedded demo defaults.
# Exit status: that of COMMAND (see README, "Exit codes"); 2 if no installation is found.
set -u

name=${1:?usage: run-installed.sh COMMAND [ARGS...]}
shift
here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P) || exit 2
project=$(dirname -- "$here")
venv=${BENCH_VENV:-$project/.venv}
exe=$venv/bin/$name

if [ ! -x "$exe" ]; then
    echo "$name.sh: no installation found: $exe is missing." >&2
    echo "$name.sh: run '$project/dev setup', or set BENCH_VENV to the virtual environment." >&2
    exit 2
fi

PATH=$venv/bin:/usr/local/bin:/usr/bin:/bin
LANG=${LANG:-C.UTF-8}
export PATH LANG
umask 022

# Without a configuration the work directory is the current one: use the project's.
cd "$project" || exit 2
exec "$exe" "$@"
