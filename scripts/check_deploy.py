#!/usr/bin/env python3
"""Check deploy/ so its manifests cannot rot silently (scripts/test.sh runs it).

    python3 scripts/check_deploy.py [CHUNKCUBE_BINARY]

- every YAML/JSON file parses (PyYAML, json);
- the Kubernetes worker Jobs are Indexed Jobs whose `completions` equal N of `--shard auto/N`,
  the commit Job runs `chunkcube commit` on the cube the ingest writes, the scan Job
  (`ingest --scan-only`, one pod, no --shard) saves its scan in that cube too;
- the AWS Batch definition's default shard matches, its command names every Ref:: parameter;
- every shell script passes `bash -n`, every Slurm script asks for `--shard auto/$n`;
- with a chunkcube binary: each chunkcube command line in the manifests parses (`--help`
  appended, so clap checks the flags and values' syntax without running anything).
Exit 1 with one line per problem.
"""
import glob
import json
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DEPLOY = os.path.join(ROOT, "deploy")
problems = []


def bad(path, msg):
    problems.append(f"{os.path.relpath(path, ROOT)}: {msg}")


def shard_count(args):
    for a, b in zip(args, args[1:]):
        if a == "--shard" and b.startswith("auto/"):
            return int(b.split("/")[1])
    return None


def arg_after(args, flag):
    return next((b for a, b in zip(args, args[1:]) if a == flag), None)


commands = []  # (path, argv after 'chunkcube')

yamls = sorted(glob.glob(os.path.join(DEPLOY, "**", "*.yaml"), recursive=True))
if not yamls:
    bad(DEPLOY, "no Kubernetes manifests")
outs = {}
for path in yamls:
    try:
        docs = [d for d in yaml.safe_load_all(open(path)) if d]
    except yaml.YAMLError as e:
        bad(path, f"not YAML: {e}")
        continue
    for doc in docs:
        if doc.get("kind") != "Job" or doc.get("apiVersion") != "batch/v1":
            bad(path, f"expected a batch/v1 Job, found {doc.get('apiVersion')} {doc.get('kind')}")
            continue
        spec = doc["spec"]
        c = spec["template"]["spec"]["containers"][0]
        argv = list(c.get("command", [])) + [str(a) for a in c.get("args", [])]
        if not argv or argv[0] != "chunkcube":
            bad(path, f"container runs {argv[:1]}, not chunkcube")
            continue
        commands.append((path, argv[1:]))
        if spec["template"]["spec"].get("restartPolicy") != "Never":
            bad(path, "restartPolicy must be Never (retries are the Job's, per index)")
        n = shard_count(argv)
        if argv[1] == "commit":
            outs.setdefault("commit", set()).add(argv[2])
            continue
        if "--scan-only" in argv:
            outs.setdefault("scan", set()).add(arg_after(argv, "--out"))
            if n is not None or spec.get("completions", 1) != 1:
                bad(path, "the scan Job is one pod without --shard (the workers read its scan)")
            continue
        outs.setdefault("write", set()).add(arg_after(argv, "--out"))
        if spec.get("completionMode") != "Indexed":
            bad(path, "a worker Job must be completionMode: Indexed (JOB_COMPLETION_INDEX)")
        if n is None:
            bad(path, "workers must run with --shard auto/N")
        elif spec.get("completions") != n:
            bad(path, f"completions {spec.get('completions')} != N {n} of --shard auto/{n}")
        if spec.get("parallelism", 1) > spec.get("completions", 1):
            bad(path, "parallelism above completions")
if outs and not outs.get("commit", set()) & outs.get("write", set()):
    bad(DEPLOY, f"the commit Job commits {outs.get('commit')}, the workers write {outs.get('write')}")
if outs and not outs.get("scan", set()) & outs.get("write", set()):
    bad(DEPLOY, f"the scan Job saves its scan in {outs.get('scan')}, the workers write {outs.get('write')}")

for path in sorted(glob.glob(os.path.join(DEPLOY, "**", "*.json"), recursive=True)):
    try:
        d = json.load(open(path))
    except ValueError as e:
        bad(path, f"not JSON: {e}")
        continue
    cmd = d.get("containerProperties", {}).get("command", [])
    params = d.get("parameters", {})
    refs = {a[5:] for a in cmd if a.startswith("Ref::")}
    if refs != set(params):
        bad(path, f"command uses Ref:: {sorted(refs)}, parameters define {sorted(params)}")
    argv = [params.get(a[5:], a) if a.startswith("Ref::") else a for a in cmd]
    if not argv or argv[0] != "chunkcube":
        bad(path, "command does not run chunkcube")
        continue
    commands.append((path, argv[1:]))
    if not str(params.get("shard", "")).startswith("auto/"):
        bad(path, "the default shard must be auto/N (AWS_BATCH_JOB_ARRAY_INDEX)")

for path in sorted(glob.glob(os.path.join(DEPLOY, "**", "*.sh"), recursive=True)
                   + glob.glob(os.path.join(DEPLOY, "**", "*.sbatch"), recursive=True)):
    r = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
    if r.returncode != 0:
        bad(path, f"bash -n: {r.stderr.strip()}")
    text = open(path).read()
    if path.endswith("ingest.sbatch") and "--shard \"auto/$n\"" not in text:
        bad(path, "the Slurm task must run --shard auto/$n (SLURM_ARRAY_TASK_ID)")
    if path.endswith("scan.sbatch") and "--scan-only" not in text:
        bad(path, "the Slurm scan job must run ingest --scan-only")
    if path.endswith("slurm/submit.sh") and "scan.sbatch" not in text:
        bad(path, "submit.sh must run the scan (scan.sbatch) before the array")
    if path.endswith(".sbatch") and not re.search(r"^#SBATCH ", text, re.M):
        bad(path, "no #SBATCH directives")

binary = sys.argv[1] if len(sys.argv) > 1 else None
if binary:
    for path, argv in commands:
        r = subprocess.run([binary] + argv + ["--help"], capture_output=True, text=True)
        if r.returncode != 0:
            bad(path, f"`chunkcube {' '.join(argv)}` does not parse: {r.stderr.strip()}")

for p in problems:
    print(f"check_deploy: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"check_deploy: {len(yamls)} Kubernetes manifests, {len(commands)} chunkcube commands ok")
