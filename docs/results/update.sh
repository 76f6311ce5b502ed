#!/bin/bash
# Rebuilds docs/results/distill.{md,json} and distill_curves.png from an
# experiment folder (default runs/paper): the preface of this page, then
# the tables `trainer experiment` wrote. Run from the repository root.
set -euo pipefail
RUN=${1:-runs/paper}
cd "$(dirname "$0")/../.."
cat docs/results/distill_preface.md "$RUN/results.md" > docs/results/distill.md
cp "$RUN/results.json" docs/results/distill.json
cp "$RUN/curves.png" docs/results/distill_curves.png
echo "docs/results/distill.md, distill.json, distill_curves.png from $RUN"
