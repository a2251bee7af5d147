#!/usr/bin/env python3
"""Are the chunk objects of two cubes byte-identical (same keys, same bytes)?

    python3 scripts/same_chunks.py CUBE REFERENCE [--who NAME]

Exit 0 and one line saying how many when they are; otherwise exit 1 with one line naming
the first differences (keys only in one cube, or keys whose bytes differ). Used by
scripts/slurm-local.sh and bench/scale.sh to check a sharded job against one process.
"""
import argparse
import os
import sys


def chunks(root):
    out = {}
    for dp, _, fs in os.walk(root):
        for f in fs:
            rel = os.path.relpath(os.path.join(dp, f), root).replace(os.sep, "/")
            if "/c/" in "/" + rel:
                with open(os.path.join(dp, f), "rb") as fh:
                    out[rel] = fh.read()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cube")
    p.add_argument("reference")
    p.add_argument("--who", default="same_chunks.py", help="name to prefix messages with")
    a = p.parse_args()
    got, want = chunks(a.cube), chunks(a.reference)
    if not want:
        sys.exit(f"{a.who}: error: the reference {a.reference} holds no chunk")
    if got.keys() != want.keys():
        sys.exit(f"{a.who}: error: chunk objects differ: only in {a.cube} "
                 f"{sorted(got.keys() - want.keys())[:5]}, only in {a.reference} "
                 f"{sorted(want.keys() - got.keys())[:5]}")
    diff = [k for k in got if got[k] != want[k]]
    if diff:
        sys.exit(f"{a.who}: error: {len(diff)} chunk objects differ from {a.reference}, e.g. {diff[0]}")
    print(f"{a.who}: {len(got)} chunk objects byte-identical to {a.reference}")


if __name__ == "__main__":
    main()
