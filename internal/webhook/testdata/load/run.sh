#!/usr/bin/env bash
# Load test of POST /webhook: signed workflow_job deliveries, driven by wrk
# over loopback, against the real service (verify, parse, record durably
# with synchronous=FULL, answer 202) and against a bare HTTP server that
# only reads the body and checks the HMAC. Prints both wrk reports, the
# ratio of their req/s, each server's CPU time per request (steadier than
# req/s when other work shares the machine), and checks that the service
# recorded every delivery it accepted.
#
# The service talks to the machine's real LXD: it gets an empty state and a
# runner_prefix of its own, so its reconcile at start owns, and deletes,
# nothing. GitHub points at a closed port and the payload's labels match no
# pool, so nothing is ever launched. Only loopback addresses are used.
#
#   bash internal/webhook/testdata/load/run.sh
#
# Environment (all optional):
#   DURATION=8s         wrk -d
#   CONNECTIONS=32      wrk -c
#   WRK_THREADS=1       wrk -t
#   LXD_SOCKET=/var/lib/lxd/unix.socket   the service connects to LXD at start
#   TARGET_RPS=5000 TARGET_P99_MS=10      the target the verdict line checks
#   REQUIRE_TARGET=1    exit 3 when the service misses the target
#   KEEP_TMP=1          keep the temp dir (binaries, config, DB, logs)
#   STATE=sqlite        the service's state: sqlite (state_dir), or postgres
#                       (a throwaway PostgreSQL cluster on loopback, started
#                       here with initdb and pg_ctl, default fsync settings)
#
# Exit status: 0 when both runs worked and the service recorded what it
# accepted (whether or not the target was met, unless REQUIRE_TARGET=1);
# 1 on a setup failure or a correctness failure.
set -euo pipefail

LOAD_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$LOAD_DIR/../../../.." && pwd)
DURATION=${DURATION:-8s}
CONNECTIONS=${CONNECTIONS:-32}
WRK_THREADS=${WRK_THREADS:-1}
LXD_SOCKET=${LXD_SOCKET:-/var/lib/lxd/unix.socket}
TARGET_RPS=${TARGET_RPS:-5000}
TARGET_P99_MS=${TARGET_P99_MS:-10}
STATE=${STATE:-sqlite}
[[ $STATE == sqlite || $STATE == postgres ]] || { echo "run.sh: STATE must be sqlite or postgres" >&2; exit 1; }

say() { printf '== %s\n' "$*"; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

[[ -f $REPO/go.mod && -d $REPO/cmd/server ]] || die "cannot find the repo root from $LOAD_DIR"
for tool in go openssl curl; do
	command -v "$tool" >/dev/null || die "$tool is required"
done
if ! command -v wrk >/dev/null; then
	if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		say "installing wrk"
		DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null ||
			{ apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >/dev/null; } ||
			die "cannot install wrk"
	else
		die "wrk is required (apt-get install -y wrk)"
	fi
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/webhook-load.XXXXXX")
PIDS=()
PG_STOP=()
cleanup() {
	if [[ ${#PG_STOP[@]} -gt 0 ]]; then
		"${PG_STOP[@]}" >/dev/null 2>&1 || true
	fi
	local pid
	for pid in "${PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ ${KEEP_TMP:-} == 1 ]]; then
		echo "kept $TMP"
	else
		rm -rf "$TMP"
	fi
}
trap cleanup EXIT

# A loopback port nothing listens on (checked, then used at once).
free_port() {
	local p i
	for i in $(seq 1 100); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	die "no free port found"
}

wait_healthy() { # url pid log
	local i
	for i in $(seq 1 300); do
		if curl -fsS -o /dev/null "$1" 2>/dev/null; then
			return 0
		fi
		if ! kill -0 "$2" 2>/dev/null; then
			cat "$3" >&2
			die "server exited before it answered $1"
		fi
		sleep 0.1
	done
	cat "$3" >&2
	die "no answer from $1 within 30s"
}

stop() { # pid: SIGTERM, wait up to 20s for it to exit
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for i in $(seq 1 200); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "run.sh: pid $pid still running 20s after SIGTERM; killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	local keep=() p
	for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
	PIDS=("${keep[@]+"${keep[@]}"}")
}

# wrk's time ("812.00us", "1.23ms", "2.01s", "1.00m") in milliseconds.
to_ms() {
	awk -v t="$1" 'BEGIN {
		if (t ~ /us$/) { sub(/us$/, "", t); printf "%.3f", t / 1000 }
		else if (t ~ /ms$/) { sub(/ms$/, "", t); printf "%.3f", t }
		else if (t ~ /m$/) { sub(/m$/, "", t); printf "%.3f", t * 60000 }
		else if (t ~ /s$/) { sub(/s$/, "", t); printf "%.3f", t * 1000 }
		else { printf "nan" }
	}'
}
wrk_field() { # file what
	case $2 in
	rps) awk '/^Requests\/sec:/ {print $2}' "$1" ;;
	requests) awk '/ requests in / {print $1}' "$1" ;;
	p50) to_ms "$(awk '$1 == "50%" {print $2}' "$1")" ;;
	p99) to_ms "$(awk '$1 == "99%" {print $2}' "$1")" ;;
	bad) awk '/^bench.lua:/ {for (i = 1; i <= NF; i++) if ($i == "responses") print $(i - 1)}' "$1" ;;
	errors) awk '/Socket errors:|Non-2xx/ {print}' "$1" ;;
	esac
}

# CPU time (user + system) the process has used, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)

run_wrk() { # name url
	local out=$TMP/wrk-$1.txt
	RUN_ID=$(openssl rand -hex 4) PAYLOAD=$PAYLOAD SIGNATURE=$SIGNATURE \
		wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
		-s "$LOAD_DIR/bench.lua" "$2" >"$out" 2>&1 || { cat "$out"; die "wrk failed"; }
	cat "$out"
}

say "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min)"
say "building in $REPO"
(
	cd "$REPO"
	CGO_ENABLED=0 go build -o "$TMP/lxd-gha-autoscaler" ./cmd/server
	CGO_ENABLED=0 go build -o "$TMP/bare" ./internal/webhook/testdata/load/bare
)

mkdir -p "$TMP/state"
openssl rand -hex 32 | tr -d '\n' >"$TMP/webhook-secret"
openssl genrsa -out "$TMP/app-key.pem" 2048 2>/dev/null
chmod 600 "$TMP/webhook-secret" "$TMP/app-key.pem"
SECRET=$(cat "$TMP/webhook-secret")
# The service refuses deliveries older than its retention (by the job's
# created_at/started_at): send payload.json with the job's times set to now.
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)
sed -E '0,/"created_at":"[^"]*","started_at":"[^"]*"/s//"created_at":"'"$NOW"'","started_at":"'"$NOW"'"/' \
	"$LOAD_DIR/payload.json" >"$TMP/payload.json"
grep -q "\"started_at\":\"$NOW\"" "$TMP/payload.json" || die "cannot set the job's times in the payload"
PAYLOAD=$TMP/payload.json
SIGNATURE="sha256=$(openssl dgst -sha256 -hmac "$SECRET" -r "$PAYLOAD" | cut -d' ' -f1)"
[[ $SIGNATURE =~ ^sha256=[0-9a-f]{64}$ ]] || die "cannot sign the payload"

# ---- the service ---------------------------------------------------------
# The service reconciles LXD at start: it deletes instances that carry its
# keys and its owner (runner_prefix) but that its state does not know. Its
# state here is empty, so it must own nothing on this shared LXD: give it a
# prefix of its own, and refuse a tree whose reconcile does not check the
# owner (before it, a bench run deleted other deployments' instances).
if ! grep -q 'in.Labels.Owner != s.cfg.NamePrefix' "$REPO/internal/scheduler/reconcile.go"; then
	die "internal/scheduler/reconcile.go does not limit reconcile to this deployment's instances (user.runner.owner): refusing to start the service against the shared LXD"
fi
DATABASE_LINE=""
if [[ $STATE == postgres ]]; then
	initdb=$(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -n 1) || true
	[[ -n $initdb ]] || die "STATE=postgres needs PostgreSQL's server binaries (bash .ci/setup-postgres.sh)"
	PGBIN=$(dirname "$(readlink -f "$initdb")")
	AS=()
	mkdir -p "$TMP/pg"
	if [[ $(id -u) == 0 ]]; then # PostgreSQL refuses to run as root
		AS=(runuser -u postgres --)
		chmod 711 "$TMP"
		chown postgres: "$TMP/pg"
	fi
	(cd / && "${AS[@]}" "$PGBIN/initdb" -D "$TMP/pg/data" -A trust -U postgres --no-sync -E UTF8 >/dev/null) || die "initdb failed"
	PG_PORT=$(free_port)
	printf "listen_addresses = '127.0.0.1'\nport = %s\nunix_socket_directories = ''\n" "$PG_PORT" >>"$TMP/pg/data/postgresql.conf"
	(cd / && "${AS[@]}" "$PGBIN/pg_ctl" -D "$TMP/pg/data" -l "$TMP/pg/server.log" -w start >/dev/null) || die "pg_ctl start failed"
	PG_STOP=(bash -c "cd / && ${AS[*]} $PGBIN/pg_ctl -D $TMP/pg/data -m immediate -w stop")
	DATABASE="postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
	DATABASE_LINE="database: $DATABASE"
	say "state: PostgreSQL $("$PGBIN/postgres" --version | awk '{print $NF}') on 127.0.0.1:$PG_PORT (default fsync settings)"
fi
RUNNER_PREFIX="bench$(openssl rand -hex 4)-"
SVC_PORT=$(free_port)
cat >"$TMP/config.yaml" <<EOF
listen: 127.0.0.1:$SVC_PORT
state_dir: $TMP/state
$DATABASE_LINE
runner_prefix: $RUNNER_PREFIX
github: {api_url: "http://127.0.0.1:9/", app_id: 1, private_key_file: $TMP/app-key.pem, webhook_secret_file: $TMP/webhook-secret}
lxd: {socket: $LXD_SOCKET}
limits: {max_instances: 1}
pools: [{name: bench, labels: [self-hosted, bench-only], image: none}]
EOF
"$TMP/lxd-gha-autoscaler" validate --config "$TMP/config.yaml" >/dev/null
say "service: lxd-gha-autoscaler serve on 127.0.0.1:$SVC_PORT, state in $TMP/state, runner_prefix $RUNNER_PREFIX"
"$TMP/lxd-gha-autoscaler" serve --config "$TMP/config.yaml" --log-level warn >"$TMP/service.log" 2>&1 &
SVC_PID=$!
PIDS+=("$SVC_PID")
wait_healthy "http://127.0.0.1:$SVC_PORT/healthz" "$SVC_PID" "$TMP/service.log"

say "wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency against the service (load average $(cut -d" " -f1-3 /proc/loadavg))"
c0=$(cpu_ticks "$SVC_PID")
run_wrk service "http://127.0.0.1:$SVC_PORT/webhook"
svc_cpu_ticks=$(($(cpu_ticks "$SVC_PID") - c0))
stop "$SVC_PID"

failed=0
svc_requests=$(wrk_field "$TMP/wrk-service.txt" requests)
svc_bad=$(wrk_field "$TMP/wrk-service.txt" bad)
if [[ ${svc_bad:-x} != 0 ]]; then
	echo "FAIL: ${svc_bad:-unknown number of} responses from the service were not 202" >&2
	failed=1
fi
if grep -q 'reconcile: deleting' "$TMP/service.log"; then
	echo "FAIL: the service deleted LXD instances at reconcile (see its log below); it must own none" >&2
	failed=1
fi
log_lines=$(wc -l <"$TMP/service.log")
if [[ $log_lines -gt 0 ]]; then
	say "service log (warn and above), $log_lines lines, first 10:"
	head -n 10 "$TMP/service.log"
fi
db_rows=""
count_sql="SELECT count(*), count(DISTINCT delivery_id), coalesce(sum(applied), 0), (SELECT count(*) FROM jobs) FROM deliveries"
if [[ $STATE == postgres ]]; then
	read -r db_rows db_distinct db_applied db_jobs < <(psql "$DATABASE" -At -F ' ' -c "$count_sql")
	say "state DB: $db_rows deliveries ($db_distinct distinct ids, $db_applied applied by the scheduler), $db_jobs jobs; wrk completed $svc_requests requests"
	if ((db_rows < svc_requests || db_rows > svc_requests + CONNECTIONS || db_distinct != db_rows)); then
		echo "FAIL: the state DB does not hold one row per accepted delivery" >&2
		failed=1
	fi
elif command -v sqlite3 >/dev/null; then
	read -r db_rows db_distinct db_applied db_jobs < <(sqlite3 -separator ' ' "$TMP/state/state.db" "$count_sql")
	say "state DB: $db_rows deliveries ($db_distinct distinct ids, $db_applied applied by the scheduler), $db_jobs jobs; wrk completed $svc_requests requests"
	# Every 202 was answered after its commit, so the rows cover every
	# completed request; requests cut off in flight at the end of the run
	# (at most one per connection) may be recorded too.
	if ((db_rows < svc_requests || db_rows > svc_requests + CONNECTIONS || db_distinct != db_rows)); then
		echo "FAIL: the state DB does not hold one row per accepted delivery" >&2
		failed=1
	fi
else
	say "sqlite3 not installed: skipping the check of the state DB row count (apt-get install -y sqlite3)"
fi

# ---- the bare baseline -----------------------------------------------------
BARE_PORT=$(free_port)
say "bare: read body + HMAC + 202 on 127.0.0.1:$BARE_PORT"
"$TMP/bare" -listen "127.0.0.1:$BARE_PORT" -secret-file "$TMP/webhook-secret" >"$TMP/bare.log" 2>&1 &
BARE_PID=$!
PIDS+=("$BARE_PID")
wait_healthy "http://127.0.0.1:$BARE_PORT/healthz" "$BARE_PID" "$TMP/bare.log"
say "wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION --latency against bare (load average $(cut -d" " -f1-3 /proc/loadavg))"
c0=$(cpu_ticks "$BARE_PID")
run_wrk bare "http://127.0.0.1:$BARE_PORT/webhook"
bare_cpu_ticks=$(($(cpu_ticks "$BARE_PID") - c0))
stop "$BARE_PID"
cat "$TMP/bare.log"
bare_bad=$(wrk_field "$TMP/wrk-bare.txt" bad)
if [[ ${bare_bad:-x} != 0 ]]; then
	echo "FAIL: ${bare_bad:-unknown number of} responses from bare were not 202" >&2
	failed=1
fi

# ---- summary ---------------------------------------------------------------
svc_rps=$(wrk_field "$TMP/wrk-service.txt" rps)
svc_p50=$(wrk_field "$TMP/wrk-service.txt" p50)
svc_p99=$(wrk_field "$TMP/wrk-service.txt" p99)
bare_rps=$(wrk_field "$TMP/wrk-bare.txt" rps)
bare_p50=$(wrk_field "$TMP/wrk-bare.txt" p50)
bare_p99=$(wrk_field "$TMP/wrk-bare.txt" p99)
# CPU per request: less sensitive than req/s to what else runs on the machine.
per_req() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { if (n > 0) printf "%.0f", t * 1e6 / hz / n; else print "nan" }'; }
svc_cpu_us=$(per_req "$svc_cpu_ticks" "$svc_requests")
bare_cpu_us=$(per_req "$bare_cpu_ticks" "$(wrk_field "$TMP/wrk-bare.txt" requests)")
ratio=$(awk -v a="$svc_rps" -v b="$bare_rps" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "nan" }')
met=$(awk -v r="$svc_rps" -v p="$svc_p99" -v tr="$TARGET_RPS" -v tp="$TARGET_P99_MS" \
	'BEGIN { print (r >= tr && p <= tp) ? "met" : "MISSED" }')

say "summary, state $STATE ($(nproc) cores, load average now $(cut -d' ' -f1-3 /proc/loadavg); wrk -t$WRK_THREADS -c$CONNECTIONS -d$DURATION; payload $(wc -c <"$PAYLOAD") bytes)"
printf '%-8s %12s %10s %10s %16s\n' "" "req/s" "p50 ms" "p99 ms" "CPU us/request"
printf '%-8s %12s %10s %10s %16s\n' service "$svc_rps" "$svc_p50" "$svc_p99" "$svc_cpu_us"
printf '%-8s %12s %10s %10s %16s\n' bare "$bare_rps" "$bare_p50" "$bare_p99" "$bare_cpu_us"
echo "service/bare req/s ratio: $ratio"
echo "target (>= $TARGET_RPS req/s and p99 <= $TARGET_P99_MS ms, durable): $met"
echo "RESULT state=$STATE service_rps=$svc_rps service_p50_ms=$svc_p50 service_p99_ms=$svc_p99 bare_rps=$bare_rps bare_p50_ms=$bare_p50 bare_p99_ms=$bare_p99 service_cpu_us=$svc_cpu_us bare_cpu_us=$bare_cpu_us ratio=$ratio db_rows=${db_rows:-skipped} target=$met"

if ((failed)); then
	exit 1
fi
if [[ $met != met && ${REQUIRE_TARGET:-} == 1 ]]; then
	exit 3
fi
