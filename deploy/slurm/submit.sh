#!/usr/bin/env bash
# Submit a chunkcube ingest as a scan job (the tiles' headers read once, saved in OUT), an
# N-task Slurm array job after it, and a commit job that runs only if every task succeeded
# (afterok); print the array, commit and scan job ids.
#   bash deploy/slurm/submit.sh MANIFEST OUT N [extra sbatch options...]
# scripts/slurm-local.sh runs exactly this against a one-node Slurm on 127.0.0.1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
manifest=${1:?usage: submit.sh MANIFEST OUT N [sbatch options]}
out=${2:?OUT}
n=${3:?N}
shift 3
[ "$n" -ge 1 ] 2>/dev/null || { echo "submit.sh: N must be a positive integer, not '$n'" >&2; exit 2; }
scan=$(sbatch --parsable "$@" "$here/scan.sbatch" "$manifest" "$out")
scan=${scan%%;*}
array=$(sbatch --parsable "$@" --dependency="afterok:$scan" --kill-on-invalid-dep=yes \
    --array="0-$((n - 1))" "$here/ingest.sbatch" "$manifest" "$out" "$n")
array=${array%%;*}
commit=$(sbatch --parsable "$@" --dependency="afterok:$array" --kill-on-invalid-dep=yes \
    "$here/commit.sbatch" "$out")
commit=${commit%%;*}
echo "$array $commit $scan"
