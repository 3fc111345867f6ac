#!/usr/bin/env bash
# Install what the tests need (idempotent), make sure Mosquitto and PostgreSQL run, then run
# ruff, mypy and pytest. Exits non-zero when anything fails or pytest collects no test.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

log() { printf '== %s\n' "$*" >&2; }

# -- system packages -------------------------------------------------------------------------
# Two kinds. Packages installed with apt (policy-rc.d refuses every service start while they
# install; NEEDRESTART_MODE=l only lists what needs a restart): the SSH server the tests start
# instances of, needrestart, and the libraries of the tools below. Tools that ship a service of
# their own (Caddy, VictoriaMetrics, CrowdSec) are never installed: their .deb is downloaded
# and unpacked into .cache/tools/<package>/ (binaries only, no maintainer script, no unit, no
# user), which the tests and the demo run from. CrowdSec's post-install registers online and
# leaves the package half-configured offline; unpacking never runs it.
PACKAGES=(openssh-server needrestart ca-certificates libc6 libsqlite3-0 libzstd1)
TOOL_PACKAGES=(caddy victoria-metrics crowdsec)
TOOLS="$ROOT/.cache/tools"
BINARIES=(/usr/sbin/sshd /usr/sbin/needrestart
  "$TOOLS/caddy/usr/bin/caddy"
  "$TOOLS/victoria-metrics/usr/bin/victoria-metrics" "$TOOLS/victoria-metrics/usr/bin/vmalert"
  "$TOOLS/crowdsec/usr/bin/crowdsec" "$TOOLS/crowdsec/usr/bin/cscli")
SETUP_LOG="$ROOT/.cache/setup.log"  # the full output of this setup's installs
mkdir -p "$ROOT/.cache"
: >"$SETUP_LOG"

fail() { echo "setup failed: $*" >&2; exit 1; }

# dpkg --audit prints the packages left unpacked or half-configured; nothing means healthy
dpkg_audit_clean() { [ -z "$(dpkg --audit 2>&1)" ]; }

# An earlier labops setup installed the crowdsec package, whose post-install fails offline:
# labops no longer needs it, so a half-configured one is purged (policy-rc.d is in place).
repair_crowdsec() {
  local status
  status=$(dpkg-query -W -f='${Status}' crowdsec 2>/dev/null) || return 0
  case "$status" in
    *" installed") return 0 ;;
    *" not-installed"|*" config-files") return 0 ;;
  esac
  log "removing the half-configured crowdsec package an earlier setup left ($status)"
  dpkg --purge crowdsec >>"$SETUP_LOG" 2>&1 \
    || fail "could not remove the half-configured crowdsec package (see $SETUP_LOG)"
}

# Our own policy-rc.d (exit 101: no service starts) for the duration of the installs, unless
# the machine has one already (then it is left exactly as it is).
OWN_POLICY=""
refuse_service_starts() {
  [ -e /usr/sbin/policy-rc.d ] && return 0
  printf '#!/bin/sh\n# labops setup: no service starts while packages install\nexit 101\n' \
    >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  OWN_POLICY=1
}
allow_service_starts() {
  if [ -n "$OWN_POLICY" ]; then rm -f /usr/sbin/policy-rc.d; OWN_POLICY=""; fi
}
trap allow_service_starts EXIT

apt_lists_present() { [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]; }
apt_update() {
  log "apt-get update"
  apt-get update >>"$SETUP_LOG" 2>&1 || fail "apt-get update failed (see $SETUP_LOG)"
}
apt_install() {
  NEEDRESTART_MODE=l DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "$@" >>"$SETUP_LOG" 2>&1
}
# downloads the package's .deb (no install) and unpacks it into $TOOLS/<package>
unpack_tool() {
  local pkg=$1 dir="$TOOLS/$1" work deb
  work=$(mktemp -d "$ROOT/.cache/download.XXXXXX")
  chmod 755 "$work"  # apt's _apt user writes the download
  if ! (cd "$work" && apt-get download "$pkg") >>"$SETUP_LOG" 2>&1; then
    rm -rf "$work"
    return 1
  fi
  deb=$(ls "$work"/*.deb)
  rm -rf "$dir"
  mkdir -p "$dir"
  dpkg-deb -x "$deb" "$dir" && dpkg-deb -f "$deb" Version >"$dir/.version"
  local rc=$?
  rm -rf "$work"
  return $rc
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] \
    || missing+=("$pkg")
done
tools_missing=()
for pkg in "${TOOL_PACKAGES[@]}"; do
  [ -s "$TOOLS/$pkg/.version" ] || tools_missing+=("$pkg")
done
broken_crowdsec=""
dpkg-query -W -f='${Status}' crowdsec 2>/dev/null | grep -qv -e ' installed$' -e 'not-installed' \
  -e 'config-files' && broken_crowdsec=1
if ((${#missing[@]})) || ((${#tools_missing[@]})) || [ -n "$broken_crowdsec" ]; then
  [ "$(id -u)" -eq 0 ] || fail "installing ${missing[*]} ${tools_missing[*]} needs root (run with sudo)"
  refuse_service_starts
  repair_crowdsec
  apt_lists_present || apt_update
  if ((${#missing[@]})); then
    log "installing ${missing[*]} (log: $SETUP_LOG)"
    # stale package lists: refresh once and try again
    apt_install "${missing[@]}" || { apt_update; apt_install "${missing[@]}"; } \
      || fail "apt-get install ${missing[*]} failed (see $SETUP_LOG)"
  fi
  for pkg in "${tools_missing[@]}"; do
    log "unpacking $pkg into .cache/tools/$pkg (not installed as a package)"
    unpack_tool "$pkg" || { apt_update; unpack_tool "$pkg"; } \
      || fail "could not download and unpack $pkg (see $SETUP_LOG)"
  done
  allow_service_starts
fi
for bin in "${BINARIES[@]}"; do
  [ -x "$bin" ] || fail "$bin is missing after the setup (see $SETUP_LOG)"
done
# the setup's own check: it never leaves a package half-installed behind
dpkg_audit_clean \
  || fail "dpkg --audit reports broken packages: $(dpkg --audit 2>&1 | awk 'NR>3 && NF {print $1}' | paste -sd' ')"

# -- Python environment ----------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv >>"$SETUP_LOG" 2>&1 \
    || fail "python3 -m venv failed: is python3-venv installed? (see $SETUP_LOG)"
fi
# (re)install when a dependency is missing or the `labops` command is not this checkout's
if ! (cd / && "$ROOT/.venv/bin/python" -c "import labops, cli, prefect, pytest, xdist, mypy") \
     >/dev/null 2>&1 || ! grep -q "from cli.main import" .venv/bin/labops 2>/dev/null \
   || [ ! -x .venv/bin/ruff ]; then
  log "installing labops[dev]"
  .venv/bin/pip install -q -e '.[dev]' >>"$SETUP_LOG" 2>&1 \
    || fail "pip install -e '.[dev]' failed (see $SETUP_LOG)"
fi

# -- services the tests use ------------------------------------------------------------------
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
  command -v mosquitto >/dev/null || fail "nothing on 127.0.0.1:1883 and Mosquitto is not installed (apt-get install mosquitto)"
  log "starting Mosquitto"
  mosquitto -d -c /etc/mosquitto/mosquitto.conf >>"$SETUP_LOG" 2>&1 \
    || fail "Mosquitto did not start (see $SETUP_LOG)"
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  command -v pg_ctlcluster >/dev/null && [ -n "$(ls /etc/postgresql 2>/dev/null)" ] \
    || fail "nothing on 127.0.0.1:5432 and PostgreSQL is not installed (apt-get install postgresql)"
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start \
    >>"$SETUP_LOG" 2>&1 || fail "PostgreSQL did not start (see $SETUP_LOG)"
fi
for port in 1883 5432; do
  for _ in $(seq 1 50); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    sleep 0.2
  done
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null || fail "nothing on 127.0.0.1:$port"
done

export PREFECT_SERVER_ANALYTICS_ENABLED=false
export DO_NOT_TRACK=1
# the tests start their own Prefect servers; never report to one of the operator's
unset PREFECT_API_URL

if [ -n "${LABOPS_SETUP_ONLY:-}" ]; then
  exit 0
fi

# -- checks ----------------------------------------------------------------------------------
status=0
log "ruff"
.venv/bin/ruff check . || status=1
log "mypy"
targets=()
for dir in labops flows tasks blocks cli deployments sandbox bench tests; do
  [ -d "$dir" ] && targets+=("$dir")
done
.venv/bin/mypy "${targets[@]}" || status=1
log "pytest"
set +e
# Three test processes, each test file kept in one of them (its module fixtures and its order
# stay as written). Most of the suite waits on servers, sandboxes and polls, not on the CPU:
# three processes finish in about half the time of one on a 2-core machine, even with a core
# kept busy. The ten slowest tests are printed: the suite must stay under 20 min.
.venv/bin/pytest -q -n 3 --dist loadfile --durations=10 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no test" >&2
fi
[ "$rc" -eq 0 ] || status=1
exit "$status"
