#!/usr/bin/python3
"""Draws a cfutures timeline (Trace Event JSON, from CFUTURES_TRACE or
cf_trace_start) as a PNG: one row per worker, one bar per task.

    /usr/bin/python3 tools/trace2png.py trace.json timeline.png

Needs matplotlib (Debian: python3-matplotlib).  The same file opens in
ui.perfetto.dev or chrome://tracing for interactive viewing."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    events = json.load(open(src))["traceEvents"]
    pools = {e["pid"]: e["args"]["name"] for e in events
             if e["ph"] == "M" and e["name"] == "process_name"}
    rows = {}
    for e in events:
        if e["ph"] == "M" and e["name"] == "thread_name":
            rows[(e["pid"], e["tid"])] = "%s: %s" % (pools.get(e["pid"], e["pid"]),
                                                     e["args"]["name"])
    keys = sorted(rows)
    fig, ax = plt.subplots(figsize=(11, 0.6 * len(keys) + 1.6))
    names = sorted({e["name"] for e in events if e["ph"] == "X"})
    colours = {n: plt.cm.tab10(i % 10) for i, n in enumerate(names)}
    for e in events:
        if e["ph"] != "X":
            continue
        y = keys.index((e["pid"], e["tid"]))
        ok = e["args"].get("status") == "CF_OK"
        ax.broken_barh([(e["ts"] / 1000.0, max(e["dur"], 1.0) / 1000.0)],
                       (y - 0.35, 0.7), facecolors=colours[e["name"]],
                       edgecolor="black" if ok else "red", linewidth=0.3)
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels([rows[k] for k in keys])
    ax.set_xlabel("time (ms)")
    ax.set_title("cfutures timeline: %d tasks (%s)" % (
        sum(1 for e in events if e["ph"] == "X"), ", ".join(names)))
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
