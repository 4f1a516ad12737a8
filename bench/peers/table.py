#!/usr/bin/env python3
"""One comparison table from a bench/compare.sh run directory.

usage: table.py DIR BROKER...

Reads DIR/meta, and per broker DIR/BROKER.status, BROKER.json (ringmq-swarm --json),
BROKER.load, and DIR/ringmq.metrics; prints a Markdown table with one column per broker
and one row per figure (rows depend on the scenario). Standard library only.
"""

import json
import os
import sys


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def thousands(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def size(b):
    if b is None:
        return "–"
    if abs(b) >= 1 << 30:
        return f"{b / (1 << 30):.2f} GiB"
    if abs(b) >= 1 << 20:
        return f"{b / (1 << 20):.1f} MiB"
    if abs(b) >= 1 << 10:
        return f"{b / (1 << 10):.1f} KiB"
    return f"{b:.0f} B"


def get(d, *keys):
    for k in keys:
        if d is None:
            return None
        d = d.get(k)
    return d


def ringmq_counters(text):
    """Totals (lines without labels) of the ringmq_* counters in a /metrics dump."""
    out = {}
    for line in (text or "").splitlines():
        if line.startswith("#") or "{" in line:
            continue
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("ringmq_"):
            try:
                out[parts[0]] = float(parts[1])
            except ValueError:
                pass
    return out


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    d, brokers = sys.argv[1], sys.argv[2:]
    meta = dict(
        line.split("=", 1) for line in (read(os.path.join(d, "meta")) or "").splitlines() if "=" in line
    )
    runs = {}
    for b in brokers:
        status = (read(os.path.join(d, f"{b}.status")) or "not run").strip()
        js = None
        text = read(os.path.join(d, f"{b}.json"))
        if text:
            try:
                js = json.loads(text)
            except ValueError:
                status += " (unreadable JSON)"
        load = (read(os.path.join(d, f"{b}.load")) or "").strip().removeprefix("load=")
        idle = (read(os.path.join(d, f"{b}.idle")) or "").strip()
        others = None
        cpu = (read(os.path.join(d, f"{b}.cpu")) or "").split()
        if js and len(cpu) == 7:
            busy0, broker0, up0, busy1, broker1, up1, hz = map(float, cpu)
            wall = up1 - up0
            if wall > 0:
                # Everything the machine did during the swarm run, less the broker and the
                # swarm (its whole run): what other people's processes took, in cores.
                rest = (busy1 - busy0 - (broker1 - broker0)) / hz - js.get("cpu_total_s", 0)
                others = max(rest, 0.0) / wall
        runs[b] = (status, js, load, idle, others)

    scenario = next((js["scenario"] for _, js, *_ in runs.values() if js), None)
    rows = []  # (label, [cell per broker])

    def row(label, f):
        cells = []
        for b in brokers:
            status, js, load, idle, others = runs[b]
            if js is None:
                cells.append("")
            else:
                try:
                    cells.append(f(js, b))
                except (KeyError, TypeError, ZeroDivisionError):
                    cells.append("–")
        rows.append((label, cells))

    rows.append(("status", [runs[b][0] for b in brokers]))
    row("transport, MQTT, QoS", lambda j, b: f"{j['transport']}, {j['mqtt_version']}, QoS {j['qos']}")
    row("load average before (1/5/15 min)", lambda j, b: runs[b][2])
    row("machine idle just before", lambda j, b: f"{runs[b][3]} %" if runs[b][3] else "–")
    row(
        "other processes' CPU during the run",
        lambda j, b: f"{runs[b][4]:.2f} cores" if runs[b][4] is not None else "–",
    )

    def ready(j, b):
        c = j["connect"]
        s = f"{c['ready_at_end_of_setup']:,} of {j['clients']:,} in {c['setup_s']:.2f} s"
        return s if c["all_ready"] else "NOT all: " + s

    def errors(j, b):
        c = j["connect"]
        parts = [
            ("reconnects", c["reconnects"]),
            ("lost conns", c["disconnects"]),
            ("connect failures", c["connect_failures"]),
            ("refused", c["connack_refused"] + c["suback_refused"]),
            ("timeouts", c["timeouts"]),
            ("protocol errors", c["protocol_errors"]),
        ]
        s = ", ".join(f"{n} {v:,}" for n, v in parts if v)
        return s or "none"

    if scenario in ("fanout", "fanin", "pairs"):
        row("clients ready", ready)
        row("published msg/s", lambda j, b: thousands(j["messages"]["publish_rate"]))
        row("delivered msg/s", lambda j, b: thousands(j["messages"]["delivery_rate"]))
        rates = {b: get(runs[b][1], "messages", "delivery_rate") for b in brokers}
        rates = {b: r for b, r in rates.items() if r and runs[b][0] == "ok"}
        if "ringmq" in rates and len(rates) > 1:
            row(
                "ringmq ÷ this (delivered)",
                lambda j, b: f"{rates['ringmq'] / rates[b]:.2f}×" if b in rates else "–",
            )
        for p, key in (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99.9", "p999"), ("max", "max")):
            row(
                f"latency {p} µs",
                lambda j, b, key=key: thousands(j["latency_us"][key])
                if j["latency_us"] and j["latency_us"]["count"]
                else "none measured",
            )
        row(
            "lost / dup / out-of-order",
            lambda j, b: "{:,} / {:,} / {:,}".format(
                j["messages"]["lost"], j["messages"]["duplicates"], j["messages"]["out_of_order"]
            ),
        )
        row(
            "lost, % of expected",
            lambda j, b: f"{100 * j['messages']['lost'] / j['messages']['expected']:.3f} %"
            if j["messages"]["expected"]
            else "–",
        )
        row(
            "lost: in gaps / after last delivery",
            lambda j, b: "{:,} / {:,}".format(j["messages"]["lost_in_gaps"], j["messages"]["lost_at_end"]),
        )
        row("drain (s)", lambda j, b: f"{j['messages']['drain_s']:.1f}")
        row("connection trouble", errors)
        row("broker CPU, % of a core", lambda j, b: f"{j['broker']['cpu']['core_percent']:.0f} %")
        row("broker CPU µs/msg", lambda j, b: f"{j['broker']['cpu']['us_per_unit']:.2f}")
        row("broker RSS end (peak)", lambda j, b: f"{size(j['broker']['rss_end'])} ({size(j['broker']['rss_peak'])})")
        row("swarm CPU, % of a core", lambda j, b: f"{j['cpu']['core_percent']:.0f} %")
        row("swarm CPU µs/msg", lambda j, b: f"{j['cpu']['us_per_unit']:.2f}")
    elif scenario == "connect":
        def conn_rate(j, b):
            c = j["connect"]
            if c["rate_per_s"] is not None:
                return thousands(c["rate_per_s"])
            # Not all connected within --duration: what did, over the whole wait.
            return f"< {c['first_connacks'] / c['setup_s']:,.0f} (not all)"

        row("connections/s", conn_rate)
        row(
            "time to all",
            lambda j, b: f"{j['connect']['time_to_all_s']:.3f} s"
            if j["connect"]["time_to_all_s"] is not None
            else "never",
        )
        rates = {b: get(runs[b][1], "connect", "rate_per_s") for b in brokers}
        rates = {b: r for b, r in rates.items() if r and runs[b][0] == "ok"}
        if "ringmq" in rates and len(rates) > 1:
            row(
                "ringmq ÷ this",
                lambda j, b: f"{rates['ringmq'] / rates[b]:.2f}×" if b in rates else "–",
            )
        row("clients ready", ready)
        for p in ("p50", "p90", "p99", "max"):
            row(f"connect latency {p} µs", lambda j, b, p=p: thousands(j["connect"]["latency_us"][p]))
        row("connection trouble", errors)
        row("broker CPU, % of a core", lambda j, b: f"{j['broker']['cpu']['core_percent']:.0f} %")
        row("broker CPU µs/connection", lambda j, b: f"{j['broker']['cpu']['us_per_unit']:.1f}")
        row("broker RSS end (peak)", lambda j, b: f"{size(j['broker']['rss_end'])} ({size(j['broker']['rss_peak'])})")
        row("broker RSS per connection", lambda j, b: size(j["broker"]["rss_growth_per_connection"]))
        row("swarm CPU, % of a core", lambda j, b: f"{j['cpu']['core_percent']:.0f} %")
    elif scenario == "idle":
        row("clients ready", ready)
        row("connection trouble", errors)
        row("broker RSS before", lambda j, b: size(j["broker"]["rss_before"]))
        row("broker RSS end (peak)", lambda j, b: f"{size(j['broker']['rss_end'])} ({size(j['broker']['rss_peak'])})")
        row("broker RSS per connection", lambda j, b: size(j["broker"]["rss_growth_per_connection"]))
        row("broker PSS per connection", lambda j, b: size(j["broker"]["pss_growth_per_connection"]))
        row("broker CPU, % of a core", lambda j, b: f"{j['broker']['cpu']['core_percent']:.1f} %")
        row("swarm CPU, % of a core", lambda j, b: f"{j['cpu']['core_percent']:.1f} %")

    c = ringmq_counters(read(os.path.join(d, "ringmq.metrics")))
    if c and "ringmq" in brokers:
        names = [
            "dropped_qos0_slow_consumer",
            "dropped_qos0_mesh_full",
            "dropped_queue_full",
            "disconnected_slow_consumer",
            "mesh_backpressure",
        ]
        shown = [f"{n} {c['ringmq_' + n]:,.0f}" for n in names if c.get("ringmq_" + n)]
        rows.append(
            ("ringmq drops (/metrics)", [(", ".join(shown) or "none") if b == "ringmq" else "" for b in brokers])
        )

    print(f"### {meta.get('command', scenario or '?')}")
    print()
    print(f"{meta.get('date', '')}; {meta.get('host', '')}; ringmq {meta.get('ringmq_commit', '?')}; files in {d}")
    print()
    header = ["", *brokers]
    table = [header, ["---"] * len(header)] + [[label, *cells] for label, cells in rows]
    widths = [max(len(r[i]) for r in table if r[i] != "---") for i in range(len(header))]
    for r in table:
        if r[0] == "---":
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        else:
            cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
