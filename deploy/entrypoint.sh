#!/bin/sh
# The container's entry point (deploy/Containerfile): which job this container runs.
#
#   cronjob | reference            a reference run (jobs/cronjob.sh)
#   watch_regressions | watcher    one watcher tick (jobs/watch_regressions.sh)
#   bench-*                        another console script, e.g. bench-run --resume, bench-cleanup
#
# Arguments after the command go to it. Exit status: the command's; 2 for an unknown command.
set -eu

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd -P) || exit 2
project=$(dirname -- "$here")
venv=${BENCH_VENV:-$project/.venv}

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }

command=${1:-}
[ $# -eq 0 ] || shift
case $command in
    cronjob | reference) exec "$project/jobs/cronjob.sh" "$@" ;;
    watch_regressions | watcher) exec "$project/jobs/watch_regressions.sh" "$@" ;;
    bench-*)
        case $command in
            */*) ;;
            *)
                if [ -x "$venv/bin/$command" ]; then
                    PATH=$venv/bin:/usr/local/bin:/usr/bin:/bin
                    export PATH
                    exec "$venv/bin/$command" "$@"
                fi
                ;;
        esac
        echo "entrypoint: no command '$command' in $venv/bin" >&2
        exit 2
        ;;
    -h | --help) usage; exit 0 ;;
    '') echo "entrypoint: which job? cronjob or watch_regressions" >&2; usage >&2; exit 2 ;;
    *) echo "entrypoint: unknown command '$command'" >&2; usage >&2; exit 2 ;;
esac
