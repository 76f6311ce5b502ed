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
# each finished arm's result and curve (not checkpoints or test matches)
for eval in "$RUN"/seed*/*/eval.json; do
    arm_dir=$(dirname "$eval")
    dest=docs/results/paper/${arm_dir#"$RUN"/}
    mkdir -p "$dest"
    cp "$eval" "$dest/"
    if [[ -f $arm_dir/results.csv ]]; then cp "$arm_dir/results.csv" "$dest/"; fi
done
echo "docs/results/distill.md, distill.json, distill_curves.png from $RUN"
