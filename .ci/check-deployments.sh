#!/usr/bin/env bash
# Check the deployment files under deployments/ (systemd unit and sysusers
# entry, nginx and Caddy proxies, GitHub App manifest, LXD profiles and
# network ACL) and the example config. Run as root on Debian 12 from the
# repository root (or anywhere: it cd's there). Installs what it needs from
# Debian (quietly, only what is missing), prints one line per check, and
# exits non-zero if any check failed. Safe to run again; everything it makes
# lives in a temp dir or is a throwaway LXD object, removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

if [ "$(id -u)" -ne 0 ]; then
	echo "check-deployments: must run as root" >&2
	exit 1
fi

tmp="$(mktemp -d /tmp/check-deployments.XXXXXX)"
chmod 755 "$tmp"
policy=/usr/sbin/policy-rc.d
made_policy=
main_cleanup() {
	[ -z "$made_policy" ] || rm -f "$policy"
	rm -rf "$tmp"
}
trap main_cleanup EXIT

failed=0
ok() { printf 'ok    %s\n' "$1"; }
skip() { printf 'skip  %s\n' "$1"; }
bad() {
	printf 'FAIL  %s\n' "$1"
	failed=$((failed + 1))
}

# Inside a check: processes it started (pids) and LXD objects it made
# (commands in cleanups) are removed when the check ends, however it ends.
check_cleanup() {
	local pid c
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	for c in "${cleanups[@]}"; do
		eval "$c" >/dev/null 2>&1 || true
	done
}

# check NAME FUNCTION [ARGS...]: runs the function in a subshell with errexit
# (in the background and waited for: in an `if` or `||` bash would ignore
# errexit), its output in a file. Prints NAME as ok, or as FAIL followed by
# the output. A line "NOTE: ..." from the function is appended to the ok line.
check() {
	local name="$1" rc=0 note
	shift
	(
		set -euo pipefail
		pids=()
		cleanups=()
		trap check_cleanup EXIT
		"$@"
	) >"$tmp/check.out" 2>&1 </dev/null &
	wait $! || rc=$?
	if [ "$rc" -eq 0 ]; then
		note="$(sed -n 's/^NOTE: //p' "$tmp/check.out" | tail -n 1)"
		ok "$name${note:+ ($note)}"
	else
		bad "$name"
		{ grep -v '^NOTE: ' "$tmp/check.out" || true; } | tail -n 40 | sed 's/^/      /'
	fi
}

py=/usr/bin/python3
unit=deployments/systemd/lxd-gha-autoscaler.service
sysusers=deployments/systemd/lxd-gha-autoscaler.conf
nginx_conf=deployments/proxy/nginx.conf
caddyfile=deployments/proxy/Caddyfile
manifest=deployments/github-app/manifest.json
host=runners.example.com

# replace FILE FROM TO: literal replacement that fails when FROM is absent,
# so a test copy never silently differs from what it claims to test.
replace() {
	"$py" - "$@" <<'EOF'
import sys
path, old, new = sys.argv[1:4]
s = open(path).read()
if old not in s:
    sys.exit(f"{path}: {old!r} not found")
open(path, "w").write(s.replace(old, new))
EOF
}

free_port() {
	"$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- packages --------------------------------------------------------------

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}
want=(systemd nginx python3-yaml openssl curl util-linux)
have_caddy=yes
if ! installed caddy; then
	if [ -n "$(apt-cache policy caddy 2>/dev/null | sed -n 's/^ *Candidate: //p' | grep -v '(none)')" ]; then
		want+=(caddy)
	else
		# The package lists may just be missing: look again after an update.
		have_caddy=maybe
	fi
fi
missing=()
for p in "${want[@]}"; do
	installed "$p" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ] || [ "$have_caddy" = maybe ]; then
	# Keep maintainer scripts from starting nginx or caddy. An existing
	# policy is kept and left alone.
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		made_policy=yes
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	if [ "$have_caddy" = maybe ]; then
		if [ -n "$(apt-cache policy caddy 2>/dev/null | sed -n 's/^ *Candidate: //p' | grep -v '(none)')" ]; then
			missing+=(caddy)
			have_caddy=yes
		else
			have_caddy=no
		fi
	fi
	if [ "${#missing[@]}" -gt 0 ]; then
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$tmp/apt.log" 2>&1 || {
			tail -n 20 "$tmp/apt.log" >&2
			exit 1
		}
	fi
	if [ -n "$made_policy" ]; then
		rm -f "$policy"
		made_policy=
	fi
	ok "packages: installed ${missing[*]:-nothing}"
else
	ok "packages: all present"
fi

# --- build and validate ----------------------------------------------------

bin="$tmp/bin/lxd-gha-autoscaler"
# dockerfile_build: the Dockerfile's build command, without RUN, writing to
# /out/lxd-gha-autoscaler.
dockerfile_build() {
	local cmd
	cmd="$(grep -E '^RUN CGO_ENABLED=0 go build .* -o /out/lxd-gha-autoscaler ' Dockerfile)" ||
		{ echo "Dockerfile: no 'RUN CGO_ENABLED=0 go build ... -o /out/lxd-gha-autoscaler' line" >&2; return 1; }
	[ "$(printf '%s\n' "$cmd" | wc -l)" -eq 1 ] || { echo "Dockerfile: several build lines" >&2; return 1; }
	printf '%s\n' "${cmd#RUN }"
}
build() {
	# The Dockerfile's own build command, with only the output path changed:
	# what is checked here is what the image ships.
	local cmd
	cmd="$(dockerfile_build)"
	cmd="${cmd/-o \/out\/lxd-gha-autoscaler/-o \"$bin\"}"
	echo "$cmd"
	eval "$cmd"
	"$bin" version >/dev/null
}
check "build: the Dockerfile's go build command" build
[ -x "$bin" ] || { echo "check-deployments: no binary, stopping" >&2; exit 1; }

readme_build() {
	# deployments/README.md tells operators to build the same way.
	local cmd
	cmd="$(dockerfile_build)"
	grep -qF -- "${cmd/-o \/out\/lxd-gha-autoscaler/-o lxd-gha-autoscaler}" deployments/README.md ||
		{ echo "deployments/README.md does not give the Dockerfile's build command: $cmd"; return 1; }
}
check "readme: deployments/README.md gives the Dockerfile's build command" readme_build

validate_example() {
	# Secrets are the owner's alone, or validate refuses them.
	(
		umask 077
		openssl genrsa -out "$tmp/app.pem" 2048 2>/dev/null
		openssl rand -hex 32 >"$tmp/webhook-secret"
	)
	cp deployments/config.example.yaml "$tmp/config.yaml"
	replace "$tmp/config.yaml" /etc/lxd-gha-autoscaler/app.pem "$tmp/app.pem"
	replace "$tmp/config.yaml" /etc/lxd-gha-autoscaler/webhook-secret "$tmp/webhook-secret"
	"$bin" validate --config "$tmp/config.yaml"
	# A secret its group may read is refused, naming the key and the fix.
	chmod 640 "$tmp/webhook-secret"
	local out
	if out="$("$bin" validate --config "$tmp/config.yaml" 2>&1)"; then
		echo "validate accepted a webhook secret of mode 0640"
		return 1
	fi
	printf '%s\n' "$out" | grep -qF "github.webhook_secret_file: $tmp/webhook-secret is mode 0640, open to its group: a secret must be its owner's alone; chmod 600 $tmp/webhook-secret" ||
		{ printf '%s\n' "$out"; echo "validate did not say which file and how to fix it"; return 1; }
}
check "validate: deployments/config.example.yaml (secrets in temp files); a secret its group may read is refused" validate_example

# readme_block MARKER: the one sh block of deployments/README.md that
# holds MARKER, as written.
readme_block() {
	"$py" - deployments/README.md "$1" <<'EOF'
import sys
s, marker = open(sys.argv[1]).read(), sys.argv[2]
blocks = [b.split("```", 1)[0] for b in s.split("```sh\n")[1:]]
found = [b for b in blocks if marker in b]
if len(found) != 1:
    sys.exit(f"deployments/README.md: want one sh block with {marker!r}, found {len(found)}")
print(found[0], end="")
EOF
}

# readme_install: deployments/README.md's commands that install the binary,
# the service's user and its unit (step 1), and the runner image's build
# step (step 3), run as written but under a throwaway root, with nobody's
# group for the service's, and the host's own service manager left alone.
readme_install() {
	local root="$tmp/readme-root"
	mkdir -p "$root/build" "$root/usr/local/bin" "$root/etc/sysusers.d" "$root/etc/systemd/system" "$root/etc/lxd-gha-autoscaler"
	readme_block "systemd-sysusers" >"$tmp/readme-step1.sh"
	replace "$tmp/readme-step1.sh" "-o lxd-gha-autoscaler ./cmd/server" "-o $root/build/lxd-gha-autoscaler ./cmd/server"
	replace "$tmp/readme-step1.sh" "install -m 0755 lxd-gha-autoscaler /usr/local/bin/" "install -m 0755 $root/build/lxd-gha-autoscaler $root/usr/local/bin/"
	replace "$tmp/readme-step1.sh" " /etc/sysusers.d/" " $root/etc/sysusers.d/"
	replace "$tmp/readme-step1.sh" $'\nsystemd-sysusers\n' $'\nsystemd-sysusers --root='"$root"$'\n'
	replace "$tmp/readme-step1.sh" " /etc/systemd/system/" " $root/etc/systemd/system/"
	replace "$tmp/readme-step1.sh" $'\nsystemctl daemon-reload\n' $'\n'
	bash -euo pipefail "$tmp/readme-step1.sh"
	"$root/usr/local/bin/lxd-gha-autoscaler" version >/dev/null
	grep -q '^lxd-gha-autoscaler:x:.*:/var/lib/lxd-gha-autoscaler:' "$root/etc/passwd" ||
		{ echo "no user lxd-gha-autoscaler in $root/etc/passwd"; return 1; }
	cmp "$unit" "$root/etc/systemd/system/lxd-gha-autoscaler.service"

	readme_block "steps/base.sh" >"$tmp/readme-step3.sh"
	# Only the lines that make the step: the image copy needs the network,
	# and the build is TestImageBuildCommand's (cmd/server).
	"$py" - "$tmp/readme-step3.sh" <<'EOF'
import sys
p = sys.argv[1]
lines = open(p).read().split("\n")
keep = [l for l in lines if not l.startswith(("lxc image copy ", "lxd-gha-autoscaler image build "))]
if len(lines) - len(keep) != 2:
    sys.exit("step 3's image block: want one lxc image copy and one image build line")
open(p, "w").write("\n".join(keep))
EOF
	replace "$tmp/readme-step3.sh" "-o root -g lxd-gha-autoscaler /etc/lxd-gha-autoscaler/steps" "-o root -g nogroup $root/etc/lxd-gha-autoscaler/steps"
	replace "$tmp/readme-step3.sh" "cat > /etc/lxd-gha-autoscaler/steps/base.sh" "cat > $root/etc/lxd-gha-autoscaler/steps/base.sh"
	bash -euo pipefail "$tmp/readme-step3.sh"
	bash -n "$root/etc/lxd-gha-autoscaler/steps/base.sh"
	grep -q installdependencies.sh "$root/etc/lxd-gha-autoscaler/steps/base.sh"
	echo "NOTE: $(stat -c '%a %U:%G' "$root/etc/lxd-gha-autoscaler/steps") steps/"
}
check "readme: deployments/README.md's install commands (step 1) and runner image step (step 3), under a temp root" readme_install

# readme_commands: every command of deployments/README.md's sh blocks is run
# here, or by a named test, or is one of the few that change the host's
# packages, services or network, which nothing runs: a command added to
# the README without one of these fails the check.
readme_commands() {
	"$py" - deployments/README.md <<'EOF'
import re, sys
s = open(sys.argv[1]).read()
here = [  # run by this script, with names or paths replaced
    r"CGO_ENABLED=0 go build ", r"install -m 0755 lxd-gha-autoscaler ", r"install -m 0644 deployments/systemd/",
    r"systemd-sysusers$", r"install -d -m 0750 -o root -g lxd-gha-autoscaler /etc/lxd-gha-autoscaler/steps$",
    r"cat > /etc/lxd-gha-autoscaler/steps/base.sh ", r"lxc network acl (create|edit) gha-runners",
    r"lxc profile (create|edit) hardened-container", r"caddy validate --config /etc/caddy/Caddyfile ", r"nginx -t$",
]
tests = [  # run by a Go test, as written (names replaced)
    r"lxd-gha-autoscaler (setup|doctor|status|jobs|job)( |$)",  # TestDeploymentsWalk (internal/e2e)
    r"lxd-gha-autoscaler image build ",                         # TestImageBuildCommand (cmd/server)
]
host = [  # change the host's packages, services or network: not run
    r"apt-get install ", r"snap install ", r"lxd init$", r"systemctl ", r"lxc network (create|set) ",
    r"lxc image copy images:", r"install -m 0644 deployments/proxy/", r"ln -s ", r"docker ",
    r"install -d -m 0750 -o 65532 ",
]
blocks = [b.split("```", 1)[0] for b in s.split("```sh\n")[1:]]
here_n, tests_n, unrun, errs = 0, 0, [], []
for b in blocks:
    heredoc = None
    for line in b.replace("\\\n", " ").split("\n"):
        if heredoc:
            if line == heredoc:
                heredoc = None
            continue
        m = re.search(r"<<'?(\w+)'?", line)
        if m:
            heredoc = m.group(1)
        line = re.sub(r"\s+#.*$", "", line).strip()
        for cmd in filter(None, line.split(" && ")):
            if any(re.match(p, cmd) for p in here):
                here_n += 1
            elif any(re.match(p, cmd) for p in tests):
                tests_n += 1
            elif any(re.match(p, cmd) for p in host):
                unrun.append(" ".join(cmd.split(" ")[:2]))
            else:
                errs.append(cmd)
if errs:
    sys.exit("commands of deployments/README.md that nothing runs and that are not the host's packages or services:\n  " + "\n  ".join(errs))
print(f"NOTE: {here_n} run here, {tests_n} by tests, {len(unrun)} not run: {', '.join(sorted(set(unrun)))}")
EOF
}
check "readme: every command of deployments/README.md is run here or by a test, but the host's packages and services" readme_commands

# --- systemd ---------------------------------------------------------------

mkdir -p "$tmp/systemd"
unit_copy="$tmp/systemd/lxd-gha-autoscaler.service"
# verify_unit FILE: systemd-analyze verify, failing on its exit status and on
# any message about the unit (it exits 0 on unknown keys, bad values, ...).
verify_unit() {
	local out rc=0
	out="$(systemd-analyze verify "$1" 2>&1)" || rc=$?
	printf '%s\n' "$out" | grep -v '^$' || true
	[ "$rc" -eq 0 ] && ! printf '%s\n' "$out" | grep -qF "$(basename "$1")"
}
systemd_verify() {
	cp "$unit" "$unit_copy"
	# ExecStart must name an existing executable: point it at the build.
	replace "$unit_copy" "ExecStart=/usr/local/bin/lxd-gha-autoscaler " "ExecStart=$bin "
	verify_unit "$unit_copy" || return 1
	# The check must catch a broken unit, or it checks nothing.
	mkdir -p "$tmp/systemd/broken"
	sed 's/^TimeoutStopSec=30$/TimeoutStopSec=30\nProtectSytem=strict/' "$unit_copy" >"$tmp/systemd/broken/lxd-gha-autoscaler.service"
	if verify_unit "$tmp/systemd/broken/lxd-gha-autoscaler.service" >/dev/null; then
		echo "systemd-analyze verify did not catch a misspelt key"
		return 1
	fi
}
check "systemd: systemd-analyze verify $unit (and it flags a planted typo)" systemd_verify

systemd_settings() {
	# The settings the brief of this unit asks for, each with exactly its
	# value, from the unit's [Service] section (comments skipped).
	"$py" - "$unit" <<'EOF'
import re, sys
want = {
    "ExecStart": "/usr/local/bin/lxd-gha-autoscaler serve --config /etc/lxd-gha-autoscaler/config.yaml",
    "User": "lxd-gha-autoscaler", "Group": "lxd-gha-autoscaler",
    "SupplementaryGroups": "lxd",
    "StateDirectory": "lxd-gha-autoscaler", "RuntimeDirectory": "lxd-gha-autoscaler",
    "ConfigurationDirectory": "lxd-gha-autoscaler",
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
    "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "RestrictNamespaces": "yes",
    "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
    "SystemCallFilter": "@system-service", "CapabilityBoundingSet": "",
    "Restart": "on-failure", "TimeoutStopSec": "30",
    # Above the service's soft limit (serve: 128 MiB unless GOMEMLIMIT).
    "MemoryMax": "512M",
}
forbidden = {"DynamicUser", "PrivateUsers", "ReadWritePaths"}
got, errs = {}, []
section = None
for line in open(sys.argv[1]):
    line = line.strip()
    if not line or line[0] in "#;":
        continue
    m = re.fullmatch(r"\[(\w+)\]", line)
    if m:
        section = m.group(1)
        continue
    k, _, v = line.partition("=")
    if section == "Service":
        if k in got and k not in ("SystemCallFilter", "ReadWritePaths"):
            errs.append(f"{k} set twice")
        got[k] = v
for k, v in want.items():
    if got.get(k) != v:
        errs.append(f"[Service] {k}={got.get(k)!r}, want {v!r}")
for k in forbidden & got.keys():
    errs.append(f"[Service] {k} must not be set (see the unit's comments)")
if errs:
    sys.exit("\n".join(errs))
EOF
	# StateDirectory/RuntimeDirectory must be the config's state_dir and the
	# directory of the default admin socket.
	grep -qx 'state_dir: /var/lib/lxd-gha-autoscaler' deployments/config.example.yaml ||
		{ echo "config.example.yaml: state_dir is not /var/lib/lxd-gha-autoscaler"; return 1; }
	grep -qx 'admin_listen: unix:/run/lxd-gha-autoscaler/admin.sock' deployments/config.example.yaml ||
		{ echo "config.example.yaml: admin_listen is not under /run/lxd-gha-autoscaler"; return 1; }
	local score
	score="$(systemd-analyze security --offline=yes --threshold=20 "$unit_copy" 2>&1 |
		sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')" ||
		{ echo "systemd-analyze security: exposure ${score:-?} is above 2.0"; return 1; }
	echo "NOTE: systemd-analyze security exposure $score"
}
check "systemd: required settings; state/runtime dirs match config.example.yaml" systemd_settings

sysusers_check() {
	mkdir -p "$tmp/sysroot/etc"
	local out rc=0
	out="$(systemd-sysusers --root="$tmp/sysroot" - <"$sysusers" 2>&1)" || rc=$?
	printf '%s\n' "$out"
	# Exit status, and the complaints it makes about a line and then ignores.
	if [ "$rc" -ne 0 ] || printf '%s\n' "$out" | grep -q '^-:[0-9]*:'; then
		return 1
	fi
	grep -E '^lxd-gha-autoscaler:x:[0-9]+:[0-9]+:[^:]*:/var/lib/lxd-gha-autoscaler:/usr/sbin/nologin$' "$tmp/sysroot/etc/passwd" ||
		{ echo "no system user lxd-gha-autoscaler with nologin in $tmp/sysroot/etc/passwd"; return 1; }
	grep -q '^lxd-gha-autoscaler:x:' "$tmp/sysroot/etc/group"
}
check "systemd: systemd-sysusers creates the user from $sysusers (in a temp root)" sysusers_check

# The unit grants no write access to the LXD socket's directory, relying on
# connect(2) needing only the socket's permission bits, not a writable mount.
# Check that on this kernel: a read-only bind mount (what ProtectSystem=strict
# makes) over a unix socket of group lxd-like gid, connected to by an
# unprivileged uid in that group, the way the service runs.
ro_socket() {
	if ! unshare -m true 2>/dev/null; then
		echo "NOTE: skipped, unshare -m is not permitted here"
		return 0
	fi
	mkdir -p "$tmp/rosock"
	"$py" - "$tmp/rosock/unix.socket" <<'EOF' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
os.chown(sys.argv[1], 0, 4242)
os.chmod(sys.argv[1], 0o660)
s.listen(4)
while True:
    c, _ = s.accept()
    c.sendall(b"hello\n")
    c.close()
EOF
	local srv=$!
	pids+=("$srv")
	for _ in $(seq 50); do [ -S "$tmp/rosock/unix.socket" ] && break; sleep 0.1; done
	unshare -m --propagation private sh -c '
		set -e
		mount --bind "$1" "$1"
		mount -o remount,bind,ro "$1"
		if touch "$1/x" 2>/dev/null; then echo "mount is not read-only"; exit 1; fi
		conn="import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); assert s.recv(6)==b\"hello\\n\""
		setpriv --reuid=65534 --regid=65534 --groups=4242 "$2" -c "$conn" "$1/unix.socket" ||
			{ echo "group member could not connect through the read-only mount"; exit 1; }
		if setpriv --reuid=65534 --regid=65534 --clear-groups "$2" -c "$conn" "$1/unix.socket" 2>/dev/null; then
			echo "non-member connected: the test proves nothing"; exit 1
		fi
	' sh "$tmp/rosock" "$py"
}
check "systemd: unix socket reachable through a read-only mount (why ReadWritePaths= is empty)" ro_socket

# --- reverse proxies -------------------------------------------------------

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
	-subj "/CN=$host" -addext "subjectAltName=DNS:$host" \
	-keyout "$tmp/tls.key" -out "$tmp/tls.crt" 2>/dev/null
chmod 644 "$tmp/tls.key"

# A stand-in for the service: answers 202 with what it saw, and logs each
# request, so a test can tell what reached it.
cat >"$tmp/backend.py" <<'EOF'
import http.server, json, sys
port, logpath = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def handle_any(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                n = int(self.rfile.readline().split(b";")[0], 16)
                body += self.rfile.read(n)
                self.rfile.readline()
                if n == 0:
                    break
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        rec = {"method": self.command, "path": self.path, "len": len(body),
               "xff": self.headers.get("X-Forwarded-For"), "xri": self.headers.get("X-Real-IP"),
               "xfp": self.headers.get("X-Forwarded-Proto"),
               "cl": self.headers.get("Content-Length"), "te": self.headers.get("Transfer-Encoding")}
        with open(logpath, "a") as f:
            f.write(json.dumps(rec) + "\n")
        out = json.dumps(rec).encode()
        self.send_response(int(sys.argv[3]) if len(sys.argv) > 3 else 202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
EOF
head -c 100 /dev/zero | tr '\0' 'a' >"$tmp/small.json"
head -c 262144 /dev/zero | tr '\0' 'a' >"$tmp/256kib.json"
head -c 262145 /dev/zero | tr '\0' 'a' >"$tmp/256kib+1.json"
head -c 2097152 /dev/zero | tr '\0' 'a' >"$tmp/2mib.json"

start_backend() { # NAME -> sets backend_port, backend_log
	backend_port="$(free_port)"
	backend_log="$tmp/$1-backend.log"
	: >"$backend_log"
	"$py" "$tmp/backend.py" "$backend_port" "$backend_log" &
	pids+=($!)
}

wait_port() { # PORT: wait for a TCP listener
	local i
	for i in $(seq 100); do
		if "$py" -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' "$1" 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "nothing listens on 127.0.0.1:$1"
	return 1
}

# proxy_behaviour PORT BIG SMALL: what an exposed proxy must do, seen from
# a client and from the service. BIG and SMALL are its answers to chunked
# bodies over and under the limit: nginx reads them and enforces the limit
# (413), or forwards them with a Content-Length (202); the Caddyfile refuses
# bodies without a Content-Length (411).
proxy_behaviour() {
	local port="$1" chunked_code="$2" small_chunked_code="$3" code url="https://$host:$1"
	# HTTP/1.1, as GitHub delivers webhooks, except for the first request
	# (HTTP/2 where the proxy offers it). Over HTTP/2 a proxy that answers
	# before reading the body (404, 413) resets the stream with NO_ERROR,
	# which curl 7.88 sometimes reports as error 92 instead of the status.
	local curl=(curl -sS -o "$tmp/resp" -w '%{http_code}' --max-time 10 --http1.1
		--resolve "$host:$port:127.0.0.1" --cacert "$tmp/tls.crt")
	local errs=0
	expect() { # WANT DESCRIPTION CURL-ARGS...
		local want="$1" what="$2"
		shift 2
		code="$("${curl[@]}" "$@" 2>"$tmp/curl.err")" || true
		if [ "$code" != "$want" ]; then
			echo "$what: got $code, want $want $(cat "$tmp/curl.err")"
			errs=$((errs + 1))
		fi
	}
	expect 202 "POST /webhook (100 B)" --http2 -X POST --data-binary @"$tmp/small.json" \
		-H 'Content-Type: application/json' -H 'X-Forwarded-For: 198.51.100.7' -H 'X-Real-IP: 198.51.100.7' "$url/webhook"
	"$py" - "$tmp/resp" <<'EOF' || errs=$((errs + 1))
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    sys.exit(f"backend answer unreadable: {e}")
want = {"method": "POST", "path": "/webhook", "len": 100, "xff": "127.0.0.1", "xri": "127.0.0.1", "xfp": "https"}
bad = {k: (r.get(k), v) for k, v in want.items() if r.get(k) != v}
if bad:
    sys.exit("forwarded request differs (got, want): " + repr(bad))
EOF
	expect 202 "POST /webhook, exactly 256 KiB" -X POST --data-binary @"$tmp/256kib.json" -H 'Expect:' "$url/webhook"
	expect 413 "POST /webhook, 256 KiB + 1 B" -X POST --data-binary @"$tmp/256kib+1.json" -H 'Expect:' "$url/webhook"
	expect "$chunked_code" "POST /webhook, 2 MiB, chunked" -X POST --data-binary @"$tmp/2mib.json" -H 'Expect:' -H 'Transfer-Encoding: chunked' "$url/webhook"
	expect "$small_chunked_code" "POST /webhook, 100 B, chunked" -X POST --data-binary @"$tmp/small.json" -H 'Expect:' -H 'Transfer-Encoding: chunked' "$url/webhook"
	# A sender that stops in the middle of its body must not reach the
	# service: the proxy reads the whole body before it forwards anything.
	local before
	before="$(wc -l <"$backend_log")"
	"$py" - "$port" "$host" "$tmp/tls.crt" <<'EOF' || errs=$((errs + 1))
import socket, ssl, sys, time
port, host, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname=host)
s.sendall(b"POST /webhook HTTP/1.1\r\nHost: " + host.encode() + b"\r\nContent-Type: application/json\r\n"
          b"Content-Length: 1000\r\n\r\n" + b"a" * 500)
time.sleep(1.5)  # ample time to forward what came, were the proxy to stream
s.close()
EOF
	sleep 0.5
	if [ "$(wc -l <"$backend_log")" != "$before" ]; then
		echo "a body cut off half-way reached the service: the proxy does not buffer request bodies"
		tail -n 1 "$backend_log"
		errs=$((errs + 1))
	fi
	expect 404 "GET /webhook" "$url/webhook"
	expect 404 "PUT /webhook" -X PUT --data-binary @"$tmp/small.json" "$url/webhook"
	expect 404 "POST /webhook/" -X POST --data-binary @"$tmp/small.json" "$url/webhook/"
	expect 404 "POST /webhookx" -X POST --data-binary @"$tmp/small.json" "$url/webhookx"
	for p in / /healthz /readyz /metrics /api/status; do
		expect 404 "GET $p" "$url$p"
	done
	expect 404 "POST /healthz" -X POST --data-binary @"$tmp/small.json" "$url/healthz"
	# Only the accepted POSTs may have reached the service, each with a
	# Content-Length (the service answers 411 without one).
	local n want=2
	[ "$small_chunked_code" != 202 ] || want=3
	n="$(wc -l <"$backend_log")"
	if [ "$n" -ne "$want" ]; then
		echo "the service got $n requests, want $want (the accepted POSTs):"
		cat "$backend_log"
		errs=$((errs + 1))
	fi
	"$py" - "$backend_log" <<'EOF' || errs=$((errs + 1))
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("te") or r.get("cl") != str(r["len"]):
        sys.exit(f"forwarded without a Content-Length that matches the body: {r}")
EOF
	[ "$errs" -eq 0 ]
}

nginx_syntax() {
	mkdir -p "$tmp/nginx"/{body,proxy,fastcgi,uwsgi,scgi}
	chown -R nobody:nogroup "$tmp/nginx"
	# The site file as shipped, but with the test certificate.
	cp "$nginx_conf" "$tmp/nginx/site.conf"
	replace "$tmp/nginx/site.conf" "/etc/letsencrypt/live/$host/fullchain.pem" "$tmp/tls.crt"
	replace "$tmp/nginx/site.conf" "/etc/letsencrypt/live/$host/privkey.pem" "$tmp/tls.key"
	cat >"$tmp/nginx/test.conf" <<EOF
user nobody nogroup;
worker_processes 1;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log;
events { worker_connections 64; }
http {
	access_log $tmp/nginx/access.log;
	client_body_temp_path $tmp/nginx/body;
	proxy_temp_path $tmp/nginx/proxy;
	fastcgi_temp_path $tmp/nginx/fastcgi;
	uwsgi_temp_path $tmp/nginx/uwsgi;
	scgi_temp_path $tmp/nginx/scgi;
	include $tmp/nginx/site.conf;
}
EOF
	nginx -t -q -e "$tmp/nginx/error.log" -c "$tmp/nginx/test.conf" || { cat "$tmp/nginx/error.log"; return 1; }
}
check "nginx: nginx -t -c on a test config that includes $nginx_conf" nginx_syntax

nginx_run() {
	[ -f "$tmp/nginx/test.conf" ] || { echo "no test config (syntax check failed)"; return 1; }
	local port
	port="$(free_port)"
	start_backend nginx
	cp "$tmp/nginx/site.conf" "$tmp/nginx/run.conf"
	replace "$tmp/nginx/run.conf" "listen 443 ssl;" "listen 127.0.0.1:$port ssl;"
	replace "$tmp/nginx/run.conf" "listen [::]:443 ssl;" ""
	replace "$tmp/nginx/run.conf" "http://127.0.0.1:8080;" "http://127.0.0.1:$backend_port;"
	sed "s#include $tmp/nginx/site.conf;#include $tmp/nginx/run.conf;#" "$tmp/nginx/test.conf" >"$tmp/nginx/run-main.conf"
	nginx -e "$tmp/nginx/error.log" -c "$tmp/nginx/run-main.conf" &
	pids+=($!)
	wait_port "$port" && wait_port "$backend_port" || { cat "$tmp/nginx/error.log"; return 1; }
	proxy_behaviour "$port" 413 202 || { tail -n 5 "$tmp/nginx/error.log"; return 1; }
}
check "nginx: only POST /webhook is forwarded, whole, with a Content-Length and the client address; 256 KiB cap; rest 404" nginx_run

caddy_env() {
	export HOME="$tmp/caddy" XDG_DATA_HOME="$tmp/caddy/data" XDG_CONFIG_HOME="$tmp/caddy/config"
	mkdir -p "$XDG_DATA_HOME" "$XDG_CONFIG_HOME"
}
caddy_syntax() {
	caddy_env
	# The file as shipped: caddy validate provisions every module without
	# starting servers or obtaining certificates.
	caddy validate --config "$caddyfile" --adapter caddyfile >"$tmp/caddy/validate.log" 2>&1 ||
		{ cat "$tmp/caddy/validate.log"; return 1; }
	if grep -q 'not formatted' "$tmp/caddy/validate.log"; then
		caddy fmt "$caddyfile" | diff -u "$caddyfile" - || true
		echo "not formatted the way 'caddy fmt' formats it"
		return 1
	fi
}
caddy_run() {
	caddy_env
	local port http_port
	port="$(free_port)"
	http_port="$(free_port)"
	start_backend caddy
	cp "$caddyfile" "$tmp/caddy/Caddyfile"
	# Test ports, no admin endpoint, local storage, and the test certificate
	# instead of ACME.
	replace "$tmp/caddy/Caddyfile" $'\n{\n' $'\n{\n\tadmin off\n\thttp_port '"$http_port"$'\n\thttps_port '"$port"$'\n\tauto_https disable_redirects\n\tskip_install_trust\n\tstorage file_system '"$tmp/caddy/storage"$'\n'
	replace "$tmp/caddy/Caddyfile" $'\n'"$host {"$'\n' $'\n'"$host {"$'\n\ttls '"$tmp/tls.crt $tmp/tls.key"$'\n'
	replace "$tmp/caddy/Caddyfile" "reverse_proxy 127.0.0.1:8080 {" "reverse_proxy 127.0.0.1:$backend_port {"
	caddy run --config "$tmp/caddy/Caddyfile" --adapter caddyfile >"$tmp/caddy/run.log" 2>&1 &
	pids+=($!)
	wait_port "$port" && wait_port "$backend_port" || { tail -n 20 "$tmp/caddy/run.log"; return 1; }
	proxy_behaviour "$port" 411 411 || { grep -i error "$tmp/caddy/run.log" | tail -n 5; return 1; }
}
if command -v caddy >/dev/null; then
	check "caddy: caddy validate $caddyfile, formatted as caddy fmt" caddy_syntax
	check "caddy: only POST /webhook is forwarded, whole, with a Content-Length and the client address; 256 KiB cap; rest 404" caddy_run
else
	skip "caddy: no caddy package in this distribution's archive; $caddyfile not checked"
fi

# --- GitHub App manifest ---------------------------------------------------

manifest_check() {
	"$py" - "$manifest" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
errs = []
known = {"name", "url", "description", "hook_attributes", "redirect_url", "callback_urls",
         "setup_url", "public", "default_events", "default_permissions",
         "request_oauth_on_install", "setup_on_update"}
if set(m) - known:
    errs.append(f"keys GitHub's manifest does not have: {sorted(set(m) - known)}")
# Least privilege: runners (JIT configs, runner groups, runner records) at the
# organization, and Actions read, without which GitHub refuses to subscribe
# an App to workflow_job. Metadata read is mandatory for every App.
want = {"organization_self_hosted_runners": "write", "actions": "read", "metadata": "read"}
if m.get("default_permissions") != want:
    errs.append(f"default_permissions = {m.get('default_permissions')}, want exactly {want}")
if m.get("default_events") != ["workflow_job"]:
    errs.append(f"default_events = {m.get('default_events')}, want ['workflow_job']")
if m.get("public") is not False:
    errs.append("public must be false")
hook = m.get("hook_attributes") or {}
if not str(hook.get("url", "")).startswith("https://") or not str(hook.get("url", "")).endswith("/webhook"):
    errs.append(f"hook_attributes.url = {hook.get('url')!r}, want https://.../webhook")
if hook.get("active", True) is not True:
    errs.append("hook_attributes.active must be true")
for k in ("name", "url", "redirect_url"):
    if not isinstance(m.get(k), str) or not m[k]:
        errs.append(f"{k} is missing")
if len(m.get("name", "")) > 34:
    errs.append("name is longer than GitHub's 34 characters")
if errs:
    sys.exit("\n".join(errs))
EOF
}
check "github-app: $manifest is JSON with exactly the least permissions and workflow_job" manifest_check

# --- LXD -------------------------------------------------------------------

yaml_parse() {
	"$py" - deployments/lxd/*.yaml <<'EOF'
import sys, yaml
for p in sys.argv[1:]:
    d = yaml.safe_load(open(p))
    if not isinstance(d, dict) or not d.get("name"):
        sys.exit(f"{p}: not a mapping with a name")
    for k, v in (d.get("config") or {}).items():
        if not isinstance(v, str):
            sys.exit(f"{p}: config {k} is {type(v).__name__}, LXD wants strings")
    for dev, kv in (d.get("devices") or {}).items():
        for k, v in kv.items():
            if not isinstance(v, str):
                sys.exit(f"{p}: device {dev} {k} is {type(v).__name__}, LXD wants strings")
print("NOTE: " + ", ".join(p.split("/")[-1] for p in sys.argv[1:]))
EOF
}
check "lxd: the YAML files parse" yaml_parse

suffix="$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
lxd_acl() {
	local acl="tmp-deploycheck-$suffix"
	lxc network acl create "$acl" >/dev/null
	cleanups+=("lxc network acl delete $acl")
	lxc network acl edit "$acl" <deployments/lxd/network-acl.yaml
	# What LXD stored must be what the file says (edit takes the rules and
	# config; the name comes from the command line).
	lxc network acl show "$acl" >"$tmp/acl.yaml"
	"$py" - deployments/lxd/network-acl.yaml "$tmp/acl.yaml" <<'EOF'
import sys, yaml
a, b = (yaml.safe_load(open(p)) for p in sys.argv[1:])
for k in ("egress", "ingress"):
    if (a.get(k) or []) != (b.get(k) or []):
        sys.exit(f"{k} rules differ after the edit:\n{b.get(k)}")
EOF
	lxc network acl delete "$acl" >/dev/null
	echo "NOTE: not attached to a bridge; creating one needs iptables or nft on the host"
}
lxd_hardened() {
	local prof="tmp-deploycheck-$suffix" net
	net="$("$py" -c 'import sys,yaml; print(yaml.safe_load(open(sys.argv[1]))["devices"]["eth0"]["network"])' deployments/lxd/profile-hardened-container.yaml)"
	cp deployments/lxd/profile-hardened-container.yaml "$tmp/hardened.yaml"
	local note="as shipped"
	if ! lxc network show "$net" 2>/dev/null | grep -q '^managed: true'; then
		# No managed bridge of that name here: check the NIC's own keys on
		# a bridged NIC instead (LXD refuses an unknown network= outright,
		# and ipv4_filtering on an unmanaged parent).
		"$py" - "$tmp/hardened.yaml" <<'EOF'
import sys, yaml
p = sys.argv[1]
d = yaml.safe_load(open(p))
nic = d["devices"]["eth0"]
nic["nictype"] = "bridged"
nic["parent"] = nic.pop("network")
nic.pop("security.ipv4_filtering", None)
yaml.safe_dump(d, open(p, "w"))
EOF
		note="no managed bridge $net here: NIC checked as bridged without network= and ipv4_filtering"
	fi
	lxc profile create "$prof" >/dev/null
	cleanups+=("lxc profile delete $prof")
	lxc profile edit "$prof" <"$tmp/hardened.yaml"
	lxc profile delete "$prof" >/dev/null
	echo "NOTE: $note"
}
lxd_gpu() {
	local prof="tmp-deploycheck-gpu-$suffix"
	lxc profile create "$prof" >/dev/null
	cleanups+=("lxc profile delete $prof")
	lxc profile edit "$prof" <deployments/lxd/profile-gpu.yaml
	lxc profile delete "$prof" >/dev/null
}
lxd_launch() {
	# A busybox container with the hardened profile (less its NIC) must
	# start, with a uid map of its own (security.idmap.isolated).
	[ -x /bin/busybox ] || { echo "NOTE: skipped, no /bin/busybox (busybox-static)"; return 0; }
	local img="tmp-deploycheck-$suffix" prof="tmp-deploycheck-run-$suffix" ct="tmp-deploycheck-$suffix"
	local r="$tmp/image"
	mkdir -p "$r/rootfs/bin" "$r/rootfs/sbin" "$r/rootfs/dev" "$r/rootfs/proc" "$r/rootfs/sys" "$r/rootfs/tmp" "$r/rootfs/etc"
	cp /bin/busybox "$r/rootfs/bin/busybox"
	printf '#!/bin/busybox sh\nexec /bin/busybox sleep 3600\n' >"$r/rootfs/sbin/init"
	chmod 755 "$r/rootfs/sbin/init"
	local arch
	arch="$(uname -m)"
	printf 'architecture: %s\ncreation_date: %s\nproperties:\n  description: check-deployments throwaway\n' "$arch" "$(date +%s)" >"$r/metadata.yaml"
	tar -C "$r" -czf "$r/image.tar.gz" metadata.yaml rootfs
	lxc image import "$r/image.tar.gz" --alias "$img" >/dev/null
	cleanups+=("lxc image delete $img")
	"$py" -c 'import sys,yaml; d=yaml.safe_load(open(sys.argv[1])); del d["devices"]["eth0"]; print(yaml.safe_dump(d))' \
		deployments/lxd/profile-hardened-container.yaml >"$tmp/hardened-nonic.yaml"
	lxc profile create "$prof" >/dev/null
	cleanups+=("lxc profile delete $prof")
	lxc profile edit "$prof" <"$tmp/hardened-nonic.yaml"
	cleanups=("lxc delete -f $ct" "${cleanups[@]}")
	lxc launch "$img" "$ct" --ephemeral --profile "$prof" </dev/null >/dev/null
	local map
	map="$(lxc exec "$ct" -- /bin/busybox cat /proc/self/uid_map)"
	echo "uid_map: $map"
	local base first
	base="$(lxc config get "$ct" volatile.idmap.base)"
	lxc stop -f "$ct" >/dev/null
	[ -n "$base" ] && [ "$(echo "$map" | awk 'NR == 1 {print $2}')" = "$base" ] ||
		{ echo "uid_map does not start at volatile.idmap.base ($base)"; return 1; }
	# Isolated: not the shared default range, which starts at root's first
	# subordinate id.
	first="$(sed -n 's/^root:\([0-9]*\):.*/\1/p' /etc/subuid 2>/dev/null | head -n 1)"
	if [ -n "$first" ] && [ "$base" = "$first" ]; then
		echo "the container uses the shared default id range: security.idmap.isolated had no effect"
		return 1
	fi
	lxc profile delete "$prof" >/dev/null
	lxc image delete "$img" >/dev/null
	echo "NOTE: idmap base $base"
}
if lxc info >/dev/null 2>&1; then
	check "lxd: network-acl.yaml accepted by lxc network acl create + edit" lxd_acl
	check "lxd: profile-hardened-container.yaml accepted by lxc profile create + edit" lxd_hardened
	check "lxd: profile-gpu.yaml accepted by lxc profile create + edit" lxd_gpu
	check "lxd: a container starts with the hardened profile (NIC removed)" lxd_launch
else
	skip "lxd: no LXD reachable (lxc info failed); profiles and ACL not checked against LXD"
fi

# --- two replicas on PostgreSQL -------------------------------------------

replicas_nginx=deployments/replicas/nginx.conf
replicas_caddy=deployments/replicas/Caddyfile

# nginx_replicas: a replica that answers 503 (it lost the database) does
# not lose the delivery: nginx sends it to the other, and GitHub sees 202.
nginx_replicas() {
	mkdir -p "$tmp/nginx-r"/{body,proxy,fastcgi,uwsgi,scgi}
	chown -R nobody:nogroup "$tmp/nginx-r"
	local port good bad
	port="$(free_port)"
	start_backend replica-ok
	good="$backend_port"
	bad="$(free_port)"
	: >"$tmp/replica-503.log"
	"$py" "$tmp/backend.py" "$bad" "$tmp/replica-503.log" 503 &
	pids+=($!)
	cp "$replicas_nginx" "$tmp/nginx-r/site.conf"
	replace "$tmp/nginx-r/site.conf" "/etc/letsencrypt/live/$host/fullchain.pem" "$tmp/tls.crt"
	replace "$tmp/nginx-r/site.conf" "/etc/letsencrypt/live/$host/privkey.pem" "$tmp/tls.key"
	replace "$tmp/nginx-r/site.conf" "listen 443 ssl;" "listen 127.0.0.1:$port ssl;"
	replace "$tmp/nginx-r/site.conf" "listen [::]:443 ssl;" ""
	replace "$tmp/nginx-r/site.conf" "server 10.0.0.11:8080" "server 127.0.0.1:$bad"
	replace "$tmp/nginx-r/site.conf" "server 10.0.0.12:8080" "server 127.0.0.1:$good"
	cat >"$tmp/nginx-r/main.conf" <<EOF
user nobody nogroup;
worker_processes 1;
daemon off;
pid $tmp/nginx-r/nginx.pid;
error_log $tmp/nginx-r/error.log;
events { worker_connections 64; }
http {
	access_log $tmp/nginx-r/access.log;
	client_body_temp_path $tmp/nginx-r/body;
	proxy_temp_path $tmp/nginx-r/proxy;
	fastcgi_temp_path $tmp/nginx-r/fastcgi;
	uwsgi_temp_path $tmp/nginx-r/uwsgi;
	scgi_temp_path $tmp/nginx-r/scgi;
	include $tmp/nginx-r/site.conf;
}
EOF
	nginx -t -q -e "$tmp/nginx-r/error.log" -c "$tmp/nginx-r/main.conf" || { cat "$tmp/nginx-r/error.log"; return 1; }
	nginx -e "$tmp/nginx-r/error.log" -c "$tmp/nginx-r/main.conf" &
	pids+=($!)
	wait_port "$port" && wait_port "$good" && wait_port "$bad" || { cat "$tmp/nginx-r/error.log"; return 1; }
	local i code errs=0
	for i in 1 2 3 4; do
		code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 --http1.1 --resolve "$host:$port:127.0.0.1" \
			--cacert "$tmp/tls.crt" -X POST --data-binary @"$tmp/small.json" "https://$host:$port/webhook")" || true
		[ "$code" = 202 ] || { echo "POST $i: got $code, want 202 from the healthy replica"; errs=$((errs + 1)); }
	done
	[ "$(wc -l <"$backend_log")" -eq 4 ] || { echo "the healthy replica got $(wc -l <"$backend_log") deliveries, want 4"; errs=$((errs + 1)); }
	[ -s "$tmp/replica-503.log" ] || { echo "the failing replica was never tried: the check proves nothing"; errs=$((errs + 1)); }
	[ "$errs" -eq 0 ]
}
check "replicas: nginx sends a delivery that one replica answers 503 to the other ($replicas_nginx)" nginx_replicas

caddy_replicas() {
	caddy_env
	caddy validate --config "$replicas_caddy" --adapter caddyfile >"$tmp/caddy/replicas.log" 2>&1 ||
		{ cat "$tmp/caddy/replicas.log"; return 1; }
	caddy fmt "$replicas_caddy" | diff -u "$replicas_caddy" - || { echo "not formatted the way 'caddy fmt' formats it"; return 1; }
}
if command -v caddy >/dev/null; then
	check "replicas: caddy validate $replicas_caddy, formatted as caddy fmt" caddy_replicas
fi

if [ "$failed" -gt 0 ]; then
	echo "check-deployments: $failed check(s) failed"
	exit 1
fi
echo "check-deployments: all checks passed"
