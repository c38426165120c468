#!/bin/sh
# Cron entry point of the watcher host: one tick of `watch_regressions`.
# See run-installed.sh: it finds the installation and works under cron's empty environment.
exec /bin/sh "$(dirname -- "$0")/run-installed.sh" watch_regressions "$@"
