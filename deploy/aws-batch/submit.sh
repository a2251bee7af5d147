#!/usr/bin/env bash
# Submit a chunkcube ingest to AWS Batch: a scan job (every tile's header read once and saved
# in OUT, so the children plan from it instead of each reading them all), then an array job
# of N children after it (each child's
# AWS_BATCH_JOB_ARRAY_INDEX is its shard: `--shard auto/N`), then the commit, which Batch
# starts only after every child succeeded (a plain dependency on an array job's id waits for
# all of its children; a failed child fails the dependency, so the commit never runs).
#   aws batch register-job-definition --cli-input-json file://deploy/aws-batch/job-definition.json
#   bash deploy/aws-batch/submit.sh QUEUE MANIFEST s3://bucket/cube N
# MANIFEST is a path inside the container (the definition mounts the host's /data; bake it
# into the image or put it on EFS for a large job).
# Credentials: the job role (jobRoleArn) — no keys in the definition. AWS_ENDPOINT_URL etc.
# may be added to "environment" for other S3 servers.
set -euo pipefail
queue=${1:?usage: submit.sh QUEUE MANIFEST OUT N}
manifest=${2:?MANIFEST}
out=${3:?OUT}
n=${4:?N}
[ "$n" -ge 2 ] 2>/dev/null || { echo "submit.sh: AWS Batch array jobs need N >= 2, not '$n'" >&2; exit 2; }
scan=$(aws batch submit-job --job-name chunkcube-scan --job-queue "$queue" \
    --job-definition chunkcube \
    --container-overrides "$(printf '{"command": ["chunkcube", "ingest", "--manifest", "%s", "--out", "%s", "--scan-only", "--threads", "16", "--quiet"]}' "$manifest" "$out")" \
    --query jobId --output text)
array=$(aws batch submit-job --job-name chunkcube-ingest --job-queue "$queue" \
    --job-definition chunkcube --array-properties "size=$n" --depends-on "jobId=$scan" \
    --parameters "manifest=$manifest,out=$out,shard=auto/$n" \
    --query jobId --output text)
commit=$(aws batch submit-job --job-name chunkcube-commit --job-queue "$queue" \
    --job-definition chunkcube --depends-on "jobId=$array" \
    --container-overrides "$(printf '{"command": ["chunkcube", "commit", "%s"]}' "$out")" \
    --query jobId --output text)
echo "$array $commit $scan"
