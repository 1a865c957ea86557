#!/usr/bin/env bash
# The README's main job: run the ethanol campaign (or resume it), then write its report.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 1 ]; then
    echo "usage: examples/run_demo.sh CONFIG (make demo passes the Makefile's CONFIG)" >&2
    exit 2
fi
config=$1
start=$(date +%s)
.venv/bin/alflow run "$config"
.venv/bin/alflow report "$config"
echo "demo wall time: $(( $(date +%s) - start )) s"
