#!/usr/bin/env bash
# Run the README's test command while a CPU hog keeps every core busy, as on a shared machine
# or CI runner; print whether it passed and how long it took.
#
#   bash tests/under_load.sh              # the README's test command (see .ci/test-command)
#   bash tests/under_load.sh pytest -x    # or another command
#
# The hog is stress-ng (Debian's package) if installed, else a Python busy loop per core; it
# is stopped by its pids when this script ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -gt 0 ]; then
  command="$*"
else
  command=$(bash .ci/test-command)
fi
cores=$(nproc)
hogs=()
stop_hogs() {
  if [ "${#hogs[@]}" -gt 0 ]; then
    kill "${hogs[@]}" 2>/dev/null || true
    wait "${hogs[@]}" 2>/dev/null || true
  fi
}
trap stop_hogs EXIT
if command -v stress-ng >/dev/null; then
  stress-ng --cpu "$cores" --quiet &
  hogs+=("$!")
else
  for _ in $(seq "$cores"); do
    python3 -c 'while True: pass' &
    hogs+=("$!")
  done
fi

echo "+ $command    (with a CPU hog on each of $cores cores; load now: $(cut -d' ' -f1-3 /proc/loadavg))"
started=$(date +%s)
status=0
bash -c "$command" || status=$?
elapsed=$(($(date +%s) - started))
if [ "$status" -eq 0 ]; then
  echo "under load: passed in ${elapsed} s"
else
  echo "under load: FAILED (exit status $status) after ${elapsed} s"
fi
exit "$status"
