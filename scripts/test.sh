#!/usr/bin/env bash
# Install what the tests need (idempotent), make sure Mosquitto and PostgreSQL run, then run
# ruff, mypy and pytest. Exits non-zero when anything fails or pytest collects no test.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

log() { printf '== %s\n' "$*" >&2; }

# -- system packages -------------------------------------------------------------------------
PACKAGES=(openssh-server victoria-metrics caddy crowdsec needrestart)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
BINARIES=(/usr/sbin/sshd /usr/bin/caddy /usr/bin/crowdsec /usr/sbin/needrestart /usr/bin/victoria-metrics /usr/bin/vmalert)
install_missing() {
  # crowdsec's post-install wants systemd and fails in containers (the binaries are what we use);
  # NEEDRESTART_MODE=l: list only, never restart the machine's services (PostgreSQL, Mosquitto)
  NEEDRESTART_MODE=l DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" || true
}
binaries_present() {
  for bin in "${BINARIES[@]}"; do [ -x "$bin" ] || return 1; done
}
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]; then
    apt-get update
  fi
  install_missing "${missing[@]}"
  if ! binaries_present; then  # stale package lists: refresh once and try again
    apt-get update
    install_missing "${missing[@]}"
  fi
fi
for bin in "${BINARIES[@]}"; do
  [ -x "$bin" ] || { echo "missing $bin after installing packages" >&2; exit 1; }
done

# -- Python environment ----------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
# (re)install when a dependency is missing or the `labops` command is not this checkout's
if ! (cd / && "$ROOT/.venv/bin/python" -c "import labops, cli, prefect, pytest, xdist, mypy") \
     >/dev/null 2>&1 || ! grep -q "from cli.main import" .venv/bin/labops 2>/dev/null \
   || [ ! -x .venv/bin/ruff ]; then
  log "installing labops[dev]"
  .venv/bin/pip install -q -e '.[dev]'
fi

# -- services the tests use ------------------------------------------------------------------
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
  log "starting Mosquitto"
  mosquitto -d -c /etc/mosquitto/mosquitto.conf
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi
for port in 1883 5432; do
  for _ in $(seq 1 50); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    sleep 0.2
  done
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null || { echo "nothing on 127.0.0.1:$port" >&2; exit 1; }
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
