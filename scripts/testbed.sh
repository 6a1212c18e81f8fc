#!/usr/bin/env bash
# Real SSH + Slurm testbed on 127.0.0.1 for the integration tests (run as root on Debian 12).
#   scripts/testbed.sh install                  install the missing Debian packages
#   scripts/testbed.sh start [--no-accounting]  idempotent start (installs first when needed); brings back
#                                               stopped daemons, also while jobs run
#   scripts/testbed.sh stop [DAEMON ...]        stop the daemons it started (by pid file), or only these
#                                               (e.g. slurmctld-slnoacct, munged, slurmdbd)
#   scripts/testbed.sh status                   one line per daemon; exit 0 when all run
#   scripts/testbed.sh env                      print the info file path and its JSON
#   scripts/testbed.sh load-others N            another user's held jobs on each cluster: make them N
#                                               (0 cancels them), for benchmarks; --cluster acct|noacct
# SL_TESTBED_NO_ACCOUNTING=1 is the same as start --no-accounting (only the cluster without sacct).
# State: $SL_TESTBED_DIR (default /var/tmp/sl-testbed); ports: $SL_TESTBED_PORT_BASE (default 22000) + offsets,
# SSH on base+22 ($SL_TESTBED_SSH_PORT overrides). A second instance needs its own state folder and port base.
# The logic lives in scripts/testbed.py (stdlib only); see its docstring for details.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -x /usr/bin/python3 ]; then
    python=/usr/bin/python3
elif command -v python3 >/dev/null 2>&1; then
    python=$(command -v python3)
else
    if [ "$(id -u)" != 0 ]; then
        echo "testbed: python3 is missing and installing it needs root" >&2
        exit 1
    fi
    echo "testbed: installing python3" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 >/dev/null
    python=/usr/bin/python3
fi
exec "$python" "$here/testbed.py" "$@"
