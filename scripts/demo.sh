#!/usr/bin/env bash
# The whole labops story on this machine: install, start the local Prefect server, a
# VictoriaMetrics of the demo's own and the sandbox homelab (pointed at the machine's Mosquitto),
# run every operation against the sandbox, print a summary. Everything keeps running afterwards
# so the runs can be browsed in the UI and the metrics queried; the last lines say how to stop it.
# LABOPS_DEMO_MQTT=HOST:PORT picks another broker than 127.0.0.1:1883.
set -uo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*" >&2; }
fail() { echo "demo failed: $*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# install exactly like the tests do, without running them
# (it checks `dpkg --audit` is empty and says in one line what failed)
LABOPS_SETUP_ONLY=1 bash scripts/test.sh || exit 1

LABOPS=.venv/bin/labops
PY=.venv/bin/python
SANDBOX_DIR=.labops/sandbox  # labops sandbox's default: its stop needs no --dir
SETUP_LOG=.cache/setup.log  # scripts/test.sh's log: each step below appends its full output
CONFIG="$SANDBOX_DIR/labops.yaml"
MQTT_BROKER=${LABOPS_DEMO_MQTT:-127.0.0.1:1883}
MQTT_HOST=${MQTT_BROKER%:*}
MQTT_PORT=${MQTT_BROKER##*:}
MQTT_LOG=.labops/mqtt-messages.txt
VM_BIN=.cache/tools/victoria-metrics/usr/bin/victoria-metrics  # unpacked by scripts/test.sh
VM_DIR=.labops/victoria-metrics
VM_PID_FILE="$VM_DIR/victoria-metrics.pid"
VM_URL=""
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
export PREFECT_API_URL=http://127.0.0.1:4200/api

# a pid file naming a live victoria-metrics on this data directory (not a recycled pid)
vm_running() {
  local pid
  pid=$(cat "$VM_PID_FILE" 2>/dev/null) || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-storageDataPath=$VM_DIR/data "
}

# sets VM_URL; returns non-zero (after saying why) when the demo goes on without metrics
start_victoriametrics() {
  if vm_running; then
    VM_URL=$(cat "$VM_DIR/url")
    log "VictoriaMetrics already running at $VM_URL (pid $(cat "$VM_PID_FILE"))"
    return 0
  fi
  if [ ! -x "$VM_BIN" ]; then
    log "NOTE: $VM_BIN is missing: no VictoriaMetrics, the runs push no metrics or heartbeat"
    return 1
  fi
  local port=8428 url
  if port_open 127.0.0.1 "$port"; then  # someone else's: any free loopback port will do
    port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  fi
  url="http://127.0.0.1:$port"
  log "starting VictoriaMetrics at $url (data in $VM_DIR/data)"
  mkdir -p "$VM_DIR"
  # own session, like the server and the sandbox: a Ctrl-C of this script leaves it running
  # (-search.latencyOffset=0s: a sample is queryable right after the run that pushed it)
  setsid "$VM_BIN" "-httpListenAddr=127.0.0.1:$port" "-storageDataPath=$VM_DIR/data" \
    -search.latencyOffset=0s -loggerLevel=ERROR \
    </dev/null >>"$VM_DIR/victoria-metrics.log" 2>&1 &
  echo $! >"$VM_PID_FILE"
  echo "$url" >"$VM_DIR/url"
  for _ in $(seq 1 100); do
    vm_running || break
    if port_open 127.0.0.1 "$port" \
       && "$PY" -c 'import sys, httpx; httpx.get(sys.argv[1], timeout=2).raise_for_status()' \
            "$url/health" 2>/dev/null; then
      VM_URL=$url
      return 0
    fi
    sleep 0.2
  done
  log "NOTE: VictoriaMetrics did not answer on $url (see $VM_DIR/victoria-metrics.log); going on without metrics"
  vm_running && kill "$(cat "$VM_PID_FILE")"
  rm -f "$VM_PID_FILE"
  return 1
}

log "starting the Prefect server (15-30 s)"
"$LABOPS" server start >>"$SETUP_LOG" 2>&1 \
  || fail "the Prefect server did not start (see $SETUP_LOG)"

start_victoriametrics
sandbox_opts=(--time-scale 0.05)
[ -n "$VM_URL" ] && sandbox_opts+=(--victoriametrics "$VM_URL")
MQTT_OK=""
if port_open "$MQTT_HOST" "$MQTT_PORT"; then
  MQTT_OK=1
  sandbox_opts+=(--mqtt "$MQTT_BROKER")
else
  log "NOTE: no MQTT broker answers on $MQTT_BROKER: the runs send no MQTT notification"
fi

log "starting the sandbox homelab in $SANDBOX_DIR"
"$LABOPS" sandbox start --dir "$SANDBOX_DIR" -- "${sandbox_opts[@]}" >>"$SETUP_LOG" 2>&1 \
  || fail "the sandbox did not start (see $SETUP_LOG and $SANDBOX_DIR/sandbox.log)"

log "checking every system of the sandbox"
"$LABOPS" config check --config "$CONFIG"

# Records what the runs publish, for the summary (live messages only: retained ones of earlier
# runs arrive flagged and are left out).
RECORDER_PID=""
if [ -n "$MQTT_OK" ]; then
  : >"$MQTT_LOG"
  "$PY" - "$MQTT_HOST" "$MQTT_PORT" "$MQTT_LOG" <<'PY' &
import sys

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = open(path, "a", buffering=1)


def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
    if not msg.retain:
        out.write(f"{msg.topic} {msg.payload.decode(errors='replace')}\n")


client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="labops-demo-recorder")
client.on_connect = lambda c, *_: c.subscribe("labops/#", qos=1)
client.on_message = on_message
client.connect(host, port)
client.loop_forever()
PY
  RECORDER_PID=$!
  trap '[ -n "$RECORDER_PID" ] && kill "$RECORDER_PID" 2>/dev/null' EXIT
fi

# every operation whose flow module exists; change-making ones that pause for approval dry-run
mapfile -t OPERATIONS < <("$PY" - <<'PY'
import importlib.util
from cli.run import FLOWS
for name, target in FLOWS.items():
    if importlib.util.find_spec(target.split(":")[0]) is not None:
        print(name)
PY
)
declare -A RESULT
RUNS_START=$(date +%s)
for op in "${OPERATIONS[@]}"; do
  extra=()
  [ "$op" = "patch-apply" ] && extra=(--dry-run)
  log "labops run $op ${extra[*]}"
  # exit codes of labops run: 0 clean, 1 failed, 2 config error, 3 findings (--fail-on info)
  rc=0
  "$LABOPS" run "$op" --config "$CONFIG" --fail-on info "${extra[@]}" || rc=$?
  case $rc in
    0) RESULT[$op]="clean" ;;
    3) RESULT[$op]="findings" ;;
    *) RESULT[$op]="FAILED (exit $rc)" ;;
  esac
done

# the heartbeat these runs pushed (not an earlier demo's), by flow label (operation with _)
declare -A BEAT
if [ -n "$VM_URL" ]; then
  while read -r flow; do
    [ -n "$flow" ] && BEAT[$flow]="pushed"
  done < <("$PY" - "$VM_URL" "$RUNS_START" "${#OPERATIONS[@]}" <<'PY'
import sys
import time

import httpx

url, since, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
flows: set[str] = set()
# the last run's sample may take a moment to become searchable: ask a few times
for _ in range(10):
    httpx.get(f"{url}/internal/force_flush", timeout=10)
    body = httpx.get(
        f"{url}/api/v1/query",
        params={"query": f"labops_flow_last_run_timestamp_seconds >= {since}", "nocache": "1"},
        timeout=10,
    ).json()
    flows = {series["metric"]["flow"] for series in body["data"]["result"]}
    if len(flows) >= expected:
        break
    time.sleep(0.5)
print("\n".join(sorted(flows)))
PY
  )
fi
sleep 0.5  # the recorder gets the last notification's message in
[ -n "$RECORDER_PID" ] && kill "$RECORDER_PID" 2>/dev/null && RECORDER_PID=""

echo
echo "labops demo summary"
printf '  %-18s %-20s %s\n' "OPERATION" "RESULT" "HEARTBEAT"
for op in "${OPERATIONS[@]}"; do
  beat="${BEAT[${op//-/_}]:-}"
  [ -z "$VM_URL" ] && beat="(no VictoriaMetrics)"
  printf '  %-18s %-20s %s\n' "$op" "${RESULT[$op]}" "${beat:-missing}"
done
((${#OPERATIONS[@]})) || echo "  (no operation written yet)"
if [ -n "$MQTT_OK" ]; then
  echo
  echo "MQTT messages the runs published on $MQTT_BROKER:"
  if [ -s "$MQTT_LOG" ]; then
    cut -d' ' -f1 "$MQTT_LOG" | sort | uniq -c | sed 's/^ */  /'
  else
    echo "  none"
  fi
fi

stop="$LABOPS sandbox stop; $LABOPS server stop"
[ -n "$VM_URL" ] && stop+="; kill \$(cat $VM_PID_FILE)"
echo
echo "Prefect UI:  http://127.0.0.1:4200   (flow runs, artifacts, logs)"
if [ -n "$MQTT_OK" ]; then
  echo "MQTT:        mosquitto_sub -h $MQTT_HOST -p $MQTT_PORT -t 'labops/#' -v   (the next runs' notifications; all messages in $MQTT_LOG)"
else
  echo "MQTT:        skipped (no broker on $MQTT_BROKER)"
fi
if [ -n "$VM_URL" ]; then
  echo "Heartbeat:   curl -s $VM_URL/api/v1/query --data-urlencode 'query=time() - labops_flow_last_success_timestamp_seconds'"
  echo "             (seconds since each flow last succeeded; also labops_flow_last_run_timestamp_seconds, labops_flow_up)"
else
  echo "Heartbeat:   skipped (no VictoriaMetrics)"
fi
echo "Run again:   $LABOPS run backups --config $CONFIG   (from this directory: the run shows in the UI)"
echo "Stop:        $stop"
