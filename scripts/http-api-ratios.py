#!/usr/bin/env python3
"""Same-round ratios of a CSV written by scripts/http-api-cost.sh.

Usage: scripts/http-api-ratios.py FILE

For every scenario and build (the "base: " / "new: " prefix of the case, when BASE was set)
each case's msg/s and broker CPU per delivery against "events on" of the same build and round
(the API's cost), and, with two builds, each case of "new" against the same case of "base" in
the same round. Each line: the per-round ratios and their median.
"""
import csv
import statistics
import sys
from collections import defaultdict


def main(path):
    rows = [r for r in csv.DictReader(open(path)) if r.get("msgs_per_s")]
    runs = defaultdict(dict)  # (scenario, build, case) -> run -> row
    order = []
    for r in rows:
        build, case = ("", r["case"])
        if r["case"].startswith(("base: ", "new: ")):
            build, case = r["case"].split(": ", 1)
        key = (r["scenario"], build, case)
        if key not in runs:
            order.append(key)
        runs[key][r["run"]] = r

    def msgs(r):
        return float(r["msgs_per_s"])

    def cpu(r):
        return float(r["broker_cpu_s"]) / max(1.0, float(r["delivered"]))

    def ratios(a, b, measure):
        return [measure(a[k]) / measure(b[k]) for k in sorted(a) if k in b and measure(b[k])]

    def show(label, a, b):
        m, c = ratios(a, b, msgs), ratios(a, b, cpu)
        if not m:
            return
        print(f"  {label}: msg/s {[round(x, 2) for x in m]} median {statistics.median(m):.2f};"
              f" CPU/delivery {[round(x, 2) for x in c]} median {statistics.median(c):.2f}")

    scenarios = []
    for s, _, _ in order:
        if s not in scenarios:
            scenarios.append(s)
    for s in scenarios:
        print(f"== {s}")
        for (s2, build, case) in order:
            if s2 != s:
                continue
            base_case = "events on" + (case[len(case.split(" (kinds=")[0]):] if " (kinds=" in case else "")
            this = runs[(s, build, case)]
            med = statistics.median(msgs(r) for r in this.values())
            print(f"  {build or '-'} | {case}: msg/s median {med:,.0f}")
            ref = runs.get((s, build, base_case))
            if ref is not None and base_case != case:
                show(f"    vs {base_case} ({build or 'same build'})", this, ref)
            if build == "new" and (s, "base", case) in runs:
                show("    new vs base", this, runs[(s, "base", case)])


if __name__ == "__main__":
    main(sys.argv[1])
