#!/usr/bin/env python3
"""Print the import graph of src/'s top-level modules and check the layering rules.

    python3 scripts/module_graph.py          # the graph, the layer order, and any violation
    python3 scripts/module_graph.py --dot    # Graphviz DOT of the same graph

Rules (exit 1 if broken): no import circle among top-level modules, and no source file over
800 lines. A module "imports" another when its files name `crate::<other>` (in `use` lines or
paths) -- main.rs and cli/ are the CLI and are allowed to see everything, so they are left out.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
MAX_LINES = 800


def top_modules():
    mods = {}
    for entry in sorted(os.listdir(ROOT)):
        path = os.path.join(ROOT, entry)
        if os.path.isdir(path) and entry == "cli":
            continue
        if os.path.isdir(path):
            mods[entry] = [
                os.path.join(dp, f) for dp, _, fs in os.walk(path) for f in fs if f.endswith(".rs")
            ]
        elif entry.endswith(".rs") and entry not in ("lib.rs", "main.rs"):
            mods[entry[:-3]] = [path]
    return mods


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def edges(mods):
    out = {m: set() for m in mods}
    names = "|".join(map(re.escape, mods))
    pat = re.compile(r"\bcrate::(" + names + r")\b")
    # `use crate::{a, b::c}` groups
    group = re.compile(r"\bcrate::\{([^}]*)\}", re.S)
    for m, files in mods.items():
        for f in files:
            text = strip_comments(open(f, encoding="utf-8").read())
            for other in pat.findall(text):
                if other != m:
                    out[m].add(other)
            for g in group.findall(text):
                for part in g.split(","):
                    head = part.strip().split("::")[0]
                    if head in mods and head != m:
                        out[m].add(head)
    return out


def find_cycle(graph):
    state = {}
    stack = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                c = visit(d)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


def layers(graph):
    """Modules in dependency order: each after everything it imports."""
    order, done = [], set()
    remaining = set(graph)
    while remaining:
        ready = sorted(m for m in remaining if graph[m] <= done)
        if not ready:
            break
        order.append(ready)
        done |= set(ready)
        remaining -= set(ready)
    return order


def main():
    mods = top_modules()
    graph = edges(mods)
    if "--dot" in sys.argv:
        print("digraph modules {\n  rankdir=BT;")
        for m in sorted(graph):
            for d in sorted(graph[m]):
                print(f'  "{m}" -> "{d}";')
        print("}")
        return 0
    for m in sorted(graph):
        deps = ", ".join(sorted(graph[m])) or "-"
        print(f"{m:10} imports {deps}")
    bad = 0
    cycle = find_cycle(graph)
    if cycle:
        print("error: import circle: " + " -> ".join(cycle))
        bad = 1
    else:
        print("layers (bottom up): " + " -> ".join("(" + ", ".join(l) + ")" for l in layers(graph)))
    for dp, _, fs in os.walk(ROOT):
        for f in fs:
            if f.endswith(".rs"):
                p = os.path.join(dp, f)
                n = sum(1 for _ in open(p, encoding="utf-8"))
                if n > MAX_LINES:
                    print(f"error: {os.path.relpath(p, os.path.join(ROOT, '..'))} has {n} lines (> {MAX_LINES})")
                    bad = 1
    if not bad:
        print(f"ok: no circle, no file over {MAX_LINES} lines")
    return bad


if __name__ == "__main__":
    sys.exit(main())
