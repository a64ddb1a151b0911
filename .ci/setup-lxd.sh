#!/usr/bin/env bash
# Make a local LXD ready for the tests, as root on Debian 12 without systemd:
# install lxd, lxd-client and busybox-static if missing, start the daemon if
# it is not running, and give it a "default" dir storage pool used by the
# default profile's root disk. Safe to run again.
set -euo pipefail

log=/var/log/lxd-manual.log

if [ "$(id -u)" -ne 0 ]; then
	echo "setup-lxd: must run as root" >&2
	exit 1
fi

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# Install only what is missing: a host that already runs LXD (e.g. the snap
# on Ubuntu) keeps it and only gains busybox-static.
pkgs=()
if ! command -v lxd >/dev/null || ! command -v lxc >/dev/null; then
	pkgs+=(lxd lxd-client)
fi
if ! installed busybox-static; then
	pkgs+=(busybox-static)
fi
# debootstrap makes the systemd source image the image-build tests use.
if ! installed debootstrap; then
	pkgs+=(debootstrap)
fi
if [ "${#pkgs[@]}" -gt 0 ]; then
	echo "setup-lxd: installing ${pkgs[*]}"
	# Keep maintainer scripts from starting services: we start lxd ourselves,
	# and without systemd their attempt can fail the install.
	policy=/usr/sbin/policy-rc.d
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		trap 'rm -f "$policy"' EXIT
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q "${pkgs[@]}"
fi

# The daemon, not its helpers: container monitors and proxy processes are
# named lxd too, and outlive a daemon that died.
daemon_running() {
	pgrep -f '^([^ ]*/)?lxd( -[^ ]+( [^- ][^ ]*)?)*$' >/dev/null
}

start_lxd() {
	echo "setup-lxd: starting lxd (log: $log)"
	# setsid + nohup: the daemon outlives this script and its caller's
	# process group.
	# From /: the daemon outlives this checkout, and its children (rsync for
	# snapshots) fail once an inherited working directory is deleted.
	# The redirections are on the whole background subshell, not on the
	# daemon's command inside it: the subshell that runs `cd / && ...` may
	# stay alive as the daemon's parent, and with the script's stdout it
	# would hold its caller's pipe open for as long as the daemon runs
	# (`setup-lxd.sh | tee log` would never end). exec leaves no such
	# subshell either way.
	(cd / && exec setsid nohup lxd --group root) </dev/null >>"$log" 2>&1 &
}

# A running daemon answers at once; starting a second one would fail.
if ! timeout 20 lxc info >/dev/null 2>&1 && ! daemon_running; then
	start_lxd
fi
if ! lxd waitready --timeout 60; then
	# An lxd that was shutting down when we looked: start a new one.
	if daemon_running || ! { start_lxd && lxd waitready --timeout 60; }; then
		echo "setup-lxd: lxd not ready; last lines of $log:" >&2
		tail -n 30 "$log" >&2 || true
		exit 1
	fi
fi

# `lxd init --auto` fails here, so do the two parts the tests need by hand.
if ! lxc storage show default >/dev/null 2>&1; then
	lxc storage create default dir
fi
if ! lxc profile device get default root pool >/dev/null 2>&1; then
	lxc profile device add default root disk path=/ pool=default
fi

echo "setup-lxd: ready (lxd $(lxd --version))"
