#!/usr/bin/env bash
# The README's main job: run the ethanol campaign (or resume it), then write its report.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-examples/ethanol-mace.toml}
start=$(date +%s)
.venv/bin/alflow run "$config"
.venv/bin/alflow report "$config"
echo "demo wall time: $(( $(date +%s) - start )) s"
