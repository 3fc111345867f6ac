#!/usr/bin/env bash
# The whole labops story on this machine: install, start the local Prefect server and the sandbox
# homelab, run every operation against the sandbox, print a summary. Server and sandbox keep
# running afterwards so the runs can be browsed in the UI.
set -uo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*" >&2; }

# install exactly like the tests do, without running them
LABOPS_SETUP_ONLY=1 bash scripts/test.sh || { echo "setup failed" >&2; exit 1; }

LABOPS=.venv/bin/labops
SANDBOX_DIR=.labops/sandbox
CONFIG="$SANDBOX_DIR/labops.yaml"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_API_URL=http://127.0.0.1:4200/api

log "starting the Prefect server (15-30 s)"
"$LABOPS" server start || { echo "the Prefect server did not start" >&2; exit 1; }

log "starting the sandbox homelab in $SANDBOX_DIR"
"$LABOPS" sandbox start --dir "$SANDBOX_DIR" -- --time-scale 0.05 \
  || { echo "the sandbox did not start" >&2; exit 1; }

log "checking every system of the sandbox"
"$LABOPS" config check --config "$CONFIG"

# every operation whose flow module exists; change-making ones that pause for approval dry-run
mapfile -t OPERATIONS < <(.venv/bin/python - <<'PY'
import importlib.util
from cli.run import FLOWS
for name, target in FLOWS.items():
    if importlib.util.find_spec(target.split(":")[0]) is not None:
        print(name)
PY
)
declare -A RESULT
for op in "${OPERATIONS[@]}"; do
  extra=()
  [ "$op" = "patch-apply" ] && extra=(--dry-run)
  log "labops run $op ${extra[*]}"
  if "$LABOPS" run "$op" --config "$CONFIG" "${extra[@]}"; then
    RESULT[$op]="completed"
  else
    RESULT[$op]="FAILED (exit $?)"
  fi
done

echo
echo "labops demo summary"
printf '  %-18s %s\n' "OPERATION" "RESULT"
for op in "${OPERATIONS[@]}"; do
  printf '  %-18s %s\n' "$op" "${RESULT[$op]}"
done
((${#OPERATIONS[@]})) || echo "  (no operation written yet)"
cat <<TXT

Prefect UI:  http://127.0.0.1:4200   (flow runs, artifacts, logs)
Run again:   export PREFECT_API_URL=$PREFECT_API_URL; $LABOPS run backups --config $CONFIG
Stop:        $LABOPS sandbox stop --dir $SANDBOX_DIR; $LABOPS server stop
TXT
