#!/usr/bin/env bash
# Run a chunkcube ingest as a real Slurm array job on this machine, then check it.
#   bash scripts/slurm-local.sh MANIFEST OUT N
#
# 1. installs slurm-wlm and munge if missing (scripts/setup.sh; needs root), builds chunkcube;
# 2. starts a one-node Slurm on 127.0.0.1 from a temporary directory: a munge key made here,
#    munged on its own socket, slurmctld and slurmd on free ports, slurm.conf written there
#    (nothing under /etc is touched, no system service is used);
# 3. submits deploy/slurm/submit.sh: the tiles' scan (`--scan-only`), then the ingest as an
#    N-task array job after it (each task plans from the saved scan) (`--shard auto/N` reads
#    SLURM_ARRAY_TASK_ID) and `chunkcube commit OUT` with --dependency=afterok on it, and waits;
# 4. checks the result: every task and the commit COMPLETED, `chunkcube verify OUT`, and every
#    chunk object byte-identical to a single-process ingest of the same manifest;
# 5. stops Slurm and munged (trap on exit, also on failure or Ctrl-C).
# OUT is replaced if it already holds a cube (a second run starts over), refused otherwise.
# Non-interactive (CI=true, no stdin); safe to run twice. Exit 0 only if every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

die() { echo "slurm-local.sh: error: $*" >&2; exit 1; }
say() { echo "slurm-local.sh: $*"; }

[ $# -eq 3 ] || die "usage: scripts/slurm-local.sh MANIFEST OUT N"
manifest=$(realpath "$1") || die "manifest $1 not found"
[ -f "$manifest" ] || die "manifest $1 not found"
out=$(realpath -m "$2")
n=$3
[[ "$n" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, not '$n'"
[ "$(id -u)" -eq 0 ] || die "run as root (installs packages; slurmd runs jobs as root here)"

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    bash scripts/setup.sh </dev/null
fi
# CHUNKCUBE_BIN: a chunkcube binary already built (else this checkout's, built now).
bin=${CHUNKCUBE_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release --quiet --bin chunkcube
    bin=$root/target/release/chunkcube
fi
[ -x "$bin" ] || die "no chunkcube binary at $bin"

if [ -e "$out" ]; then
    [ -f "$out/zarr.json" ] || [ -f "$out/chunkcube-job.json" ] || [ -f "$out/chunkcube-scan.json" ] \
        || die "$out exists and is not a chunkcube cube: give another OUT"
    rm -rf "$out"
fi
mkdir -p "$(dirname "$out")"

tmp=$(mktemp -d /tmp/slurm-local.XXXXXX)
pids=()
cleanup() {
    local st=$?
    if [ -n "${SLURM_CONF:-}" ] && [ -f "$tmp/ctld.pid" ]; then
        scancel --quiet --user=root 2>/dev/null || true
    fi
    # Only what this script started, by pid, newest first.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill "${pids[$i]}" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    if [ "$st" -ne 0 ]; then
        for f in "$tmp"/*.log "$tmp"/jobs/*.out; do
            [ -f "$f" ] && { echo "--- $f (last lines)"; tail -n 15 "$f"; }
        done >&2
    fi
    rm -rf "$tmp"
    exit "$st"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free TCP port on 127.0.0.1 (bound and released at once; two runs never share one).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- munge: a key made here, munged on its own socket ----------------------------------------
mkdir -p "$tmp/munge" "$tmp/state" "$tmp/spool" "$tmp/jobs"
chmod 700 "$tmp/munge"
mungekey --create --keyfile="$tmp/munge/munge.key" --force 2>/dev/null \
    || dd if=/dev/urandom of="$tmp/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$tmp/munge/munge.key"
sock=$tmp/munge/munge.socket
munged --key-file="$tmp/munge/munge.key" --socket="$sock" --pid-file="$tmp/munge/munged.pid" \
    --log-file="$tmp/munged.log" --seed-file="$tmp/munge/munge.seed" --force \
    || die "munged did not start (see $tmp/munged.log)"
for _ in $(seq 50); do [ -s "$tmp/munge/munged.pid" ] && break; sleep 0.1; done
pids+=("$(cat "$tmp/munge/munged.pid")")
munge --socket="$sock" -n </dev/null | unmunge --socket="$sock" >/dev/null \
    || die "munge does not round-trip a credential"

# --- Slurm: one node on 127.0.0.1 ------------------------------------------------------------
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
ctld_port=$(free_port)
slurmd_port=$(free_port)
export SLURM_CONF=$tmp/slurm.conf
cat >"$SLURM_CONF" <<EOF
ClusterName=chunkcube-local
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool/%n
SlurmctldPidFile=$tmp/ctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=localnode NodeHostname=$(hostname) NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=localnode Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -f "$SLURM_CONF" -i || die "slurmctld did not start (see $tmp/slurmctld.log)"
for _ in $(seq 100); do [ -s "$tmp/ctld.pid" ] && break; sleep 0.1; done
pids+=("$(cat "$tmp/ctld.pid")")
slurmd -f "$SLURM_CONF" -N localnode || die "slurmd did not start (see $tmp/slurmd.log)"
for _ in $(seq 100); do [ -s "$tmp/slurmd.pid" ] && break; sleep 0.1; done
pids+=("$(cat "$tmp/slurmd.pid")")
for i in $(seq 300); do
    state=$(sinfo -h -n localnode -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    [ "$i" -eq 300 ] && die "the Slurm node never became idle (state '$state')"
    sleep 0.2
done
say "Slurm up (slurmctld 127.0.0.1:$ctld_port, slurmd :$slurmd_port, $cpus CPUs)"

# --- the job: the scan, N array tasks after it, then the commit after all of them (afterok) ---
# The scripts' defaults ask for 2 CPUs and 3 GB per task (a production node); here each task
# gets one CPU so two run at once on two cores.
t0=$(date +%s.%N)
read -r array commit scan < <(CHUNKCUBE=$bin CHUNKS=time=1,y=64,x=64 bash deploy/slurm/submit.sh \
    "$manifest" "$out" "$n" --cpus-per-task=1 --mem=500M --time=10 \
    --output="$tmp/jobs/%x-%A_%a.out" --chdir="$tmp/jobs")
[ -n "${scan:-}" ] || die "sbatch did not submit the jobs"
say "submitted scan job $scan, array job $array (${n} tasks, afterok:$scan) and commit job $commit (afterok:$array)"
for i in $(seq 1200); do
    [ -z "$(squeue -h -j "$scan,$array,$commit" 2>/dev/null)" ] && break
    [ "$i" -eq 1200 ] && die "the jobs did not finish within 10 minutes: $(squeue -j "$scan,$array,$commit")"
    sleep 0.5
done
wall=$(python3 -c "import time; print(f'{time.time() - $t0:.1f}')")
states=$(scontrol -o show job "$array" | grep -o 'JobState=[A-Z_]*' | sort | uniq -c | tr -s ' ' | xargs)
tasks_done=$(scontrol -o show job "$array" | grep -c 'JobState=COMPLETED' || true)
commit_state=$(scontrol -o show job "$commit" | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
[ "$tasks_done" -eq "$n" ] || die "array job $array: $tasks_done of $n tasks COMPLETED ($states)"
scan_state=$(scontrol -o show job "$scan" | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
[ "$scan_state" = COMPLETED ] || die "scan job $scan ended $scan_state"
[ "$commit_state" = COMPLETED ] || die "commit job $commit ended $commit_state"
# Every task planned from the saved scan (its one line), none read the tiles' headers again.
reused=$(grep -l "planning from the saved scan" "$tmp"/jobs/chunkcube-ingest-*.out 2>/dev/null | wc -l)
[ "$reused" -eq "$n" ] || die "$reused of $n array tasks planned from the saved scan (see $tmp/jobs)"
say "scan job $scan COMPLETED; array job $array: $n tasks COMPLETED, each from the saved scan; commit job $commit COMPLETED (${wall} s)"

# --- checks: verify, and byte-identical to one process ---------------------------------------
"$bin" verify "$out" --quiet
"$bin" ingest --manifest "$manifest" --out "$tmp/single" --chunks time=1,y=64,x=64 --quiet
python3 scripts/same_chunks.py "$out" "$tmp/single" --who slurm-local.sh
say "ok: $out ingested by a $n-task Slurm array job and committed"
