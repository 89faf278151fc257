#!/usr/bin/env python3
"""Fails when a workspace crate depends on a workspace crate it must not (DESIGN.md section 2).

Reads `cargo metadata --no-deps` JSON on stdin. Every dependency kind counts (normal, dev,
build), so an open-source crate cannot name an enterprise crate even for its tests.
"""
import json
import sys

ALLOWED = {
    "decision-gate-core": set(),
    "decision-gate-mcp": {"decision-gate-core"},
    "decision-gate-store-enterprise": {"decision-gate-core"},
    "decision-gate-enterprise": {"decision-gate-core", "decision-gate-mcp", "decision-gate-store-enterprise"},
    "decision-gate-system-tests": {"decision-gate-core", "decision-gate-mcp"},
    "decision-gate-fuzz-harness": {"decision-gate-core", "decision-gate-mcp"},
    "decision-gate-enterprise-system-tests": {
        "decision-gate-core",
        "decision-gate-system-tests",
        "decision-gate-enterprise",
    },
}

metadata = json.load(sys.stdin)
members = {p["name"] for p in metadata["packages"]}
problems = [f"{name} is a workspace crate with no rule in {__file__}" for name in sorted(members - ALLOWED.keys())]
for package in metadata["packages"]:
    name = package["name"]
    for dep in package["dependencies"]:
        target = dep["name"]
        if target in members and target != name and target not in ALLOWED.get(name, set()):
            problems.append(f"{name} -> {target} ({dep.get('kind') or 'normal'}) breaks the dependency direction")

for p in problems:
    print(f"dependency direction: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"dependency direction: ok ({len(members)} workspace crates)")
