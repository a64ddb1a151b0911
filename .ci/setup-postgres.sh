#!/usr/bin/env bash
# PostgreSQL's server binaries for the tests, which start throwaway
# clusters of their own (initdb + pg_ctl on a loopback port, about a
# second; internal/store/pgtest). Installs Debian's postgresql only when
# initdb is missing, and keeps its packaging from starting a server.
set -euo pipefail
if command -v initdb >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
	echo "postgresql: $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | head -n 1) (present)"
	exit 0
fi
policy=/usr/sbin/policy-rc.d
cleanup() { rm -f "$policy"; }
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod +x "$policy"
	trap cleanup EXIT
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
echo "postgresql: installed $(ls -d /usr/lib/postgresql/*/bin | head -n 1)"
