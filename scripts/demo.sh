#!/usr/bin/env bash
# The main job: generates a demo project (two animals, two sessions each) and runs the behavior and
# suite2p pipelines on every session, showing the live view.
#   bash scripts/demo.sh            on the embedded local backend (jobs as local processes)
#   bash scripts/demo.sh --testbed  on the real SSH + Slurm testbed (installed and started here)
# Everything it writes lives in ./demo-output (override with SL_DEMO_DIR); existing sessions are reused,
# never overwritten.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=local
case "${1:-}" in
    "") ;;
    --testbed) mode=testbed ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown option '$1' (use --testbed or nothing)" >&2; exit 2 ;;
esac
bash scripts/bootstrap.sh
out=${SL_DEMO_DIR:-$PWD/demo-output}
mkdir -p "$out"
export SL_PIPELINES_DATA_DIR="$out/user-data"
export SL_PIPELINES_CONFIG_DIR="$out/user-config"
bin="$PWD/.venv/bin"
sessions=(demo/A1/day1 demo/A1/day2 demo/A2/day1 demo/A2/day2)

if [ "$mode" = local ]; then
    storage="$out/local/storage"
    if [ ! -d "$storage/demo" ]; then
        "$bin/sl-worker" generate --storage-root "$storage" --project demo --animal A1 --animal A2 \
            --session day1 --session day2 --planes 3
    fi
    where=(--local-root "$out/local")
else
    bash scripts/testbed.sh start
    "$bin/python" scripts/demo_testbed.py "${SL_TESTBED_DIR:-/var/tmp/sl-testbed}/testbed.json"
    where=(--server testbed)
fi

status=0
"$bin/sl-process" behavior "${sessions[@]}" "${where[@]}" --poll-interval 1 || status=$?
"$bin/sl-process" suite2p "${sessions[@]}" "${where[@]}" --poll-interval 1 || status=$?
if [ "$status" -eq 0 ]; then
    echo "Demo finished: every pipeline succeeded. Outputs are under the working root's demo/*/*/processed_data."
else
    echo "Demo finished with failures (exit $status); the summary above names the job and its stderr." >&2
fi
exit "$status"
