#!/bin/sh
# Cron entry point of the reference host: run the benchmarks once (`cronjob`).
# See run-installed.sh: it finds the installation and works under cron's empty environment.
exec /bin/sh "$(dirname -- "$0")/run-installed.sh" cronjob "$@"
