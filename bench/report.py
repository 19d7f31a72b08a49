#!/usr/bin/python3
"""make bench's figures: one JSON line per fio run in, tables and results.json out.

  report.py fio FIO_JSON KEY=VALUE...   one fio run -> one JSON line on stdout
                                        (the KEY=VALUE pairs are copied into it;
                                        numbers stay numbers)
  report.py report RUNS_JSONL OUT_JSON  the tables; writes OUT_JSON

Every figure is reported as min / median / max of its rounds. A ratio is the
ratio of the medians; its spread is the range of the per-round ratios (the two
sides of a round run one after the other, so slow drift of the machine cancels
out of those better than out of min/max of the sides).
"""
import json
import os
import statistics
import sys
import time


def fio_line(path, pairs):
    text = open(path).read()
    j = json.loads(text[text.index("{"):])["jobs"][0]
    d = j["read"] if j["read"]["io_bytes"] > 0 else j["write"]
    pct = d["clat_ns"].get("percentile", {})
    out = {}
    for p in pairs:
        k, v = p.split("=", 1)
        try:
            v = int(v)
        except ValueError:
            try:
                v = float(v)
            except ValueError:
                pass
        out[k] = v
    out.update({"mib_s": d["bw_bytes"] / 1048576, "iops": d["iops"], "ios": d["total_ios"],
                "seconds": d["runtime"] / 1000,
                "clat_p50_ms": pct.get("50.000000", 0) / 1e6, "clat_p99_ms": pct.get("99.000000", 0) / 1e6,
                "error": j["error"]})
    print(json.dumps(out))


def mmm(values):
    values = list(values)
    return min(values), statistics.median(values), max(values)


def spread(lo, med, hi):
    return 100 * (hi - lo) / med if med else 0.0


def kilo(x):
    return "%.1fk" % (x / 1000) if x >= 1000 else "%.0f" % x


def summary(runs, key):
    lo, med, hi = mmm(r[key] for r in runs)
    return {"min": lo, "median": med, "max": hi, "runs": [r[key] for r in runs],
            "spread_pct": spread(lo, med, hi)}


def print_spread(title, groups):
    """groups: [(label, job, runs)]: min/median/max IOPS and MiB/s per group."""
    print()
    print(title)
    print("%-10s %-20s | %7s %7s %7s IOPS | %6s %6s %6s MiB/s | %6s" % (
        "job", "server", "min", "median", "max", "min", "median", "max", "spread"))
    print("-" * 98)
    for label, job, runs in groups:
        i, m = summary(runs, "iops"), summary(runs, "mib_s")
        print("%-10s %-20s | %7s %7s %7s      | %6.0f %6.0f %6.0f       | %5.0f%%" % (
            job, label, kilo(i["min"]), kilo(i["median"]), kilo(i["max"]),
            m["min"], m["median"], m["max"], i["spread_pct"]))


def by_round(runs):
    return {r.get("round"): r for r in runs}


def ratio(a_runs, b_runs, key="iops"):
    """median(a)/median(b), and the per-round ratios."""
    med = statistics.median(r[key] for r in a_runs) / statistics.median(r[key] for r in b_runs)
    ra, rb = by_round(a_runs), by_round(b_runs)
    rounds = [ra[k][key] / rb[k][key] for k in ra if k in rb and rb[k][key]]
    return med, rounds


def servers_section(runs, out):
    """The classic table: bdfilterd, nbdkit and qemu-nbd on the same jobs."""
    rows, groups = [], []
    keys = list(dict.fromkeys((r["server"], r["job"]) for r in runs))
    by = {}
    for key in keys:
        mine = [r for r in runs if (r["server"], r["job"]) == key]
        i, m = summary(mine, "iops"), summary(mine, "mib_s")
        row = {"server": key[0], "job": key[1], "mib_s": m["median"], "iops": i["median"],
               "error": max(r["error"] for r in mine), "runs_iops": [round(x) for x in i["runs"]],
               "iops_min": i["min"], "iops_max": i["max"], "mib_s_min": m["min"], "mib_s_max": m["max"],
               "runs_mib_s": m["runs"], "spread_pct": i["spread_pct"]}
        by[key] = mine
        rows.append(row)
    jobs = list(dict.fromkeys(r["job"] for r in rows))
    med = {(r["server"], r["job"]): r for r in rows}
    print()
    print("%-10s | %-19s | %-19s | %-19s | %8s | %8s" % (
        "job", "bdfilterd", "nbdkit", "qemu-nbd", "/nbdkit", "/qemu-nbd"))
    print("-" * 98)
    ratios = []
    for job in jobs:
        cells = []
        for s in ("bdfilterd", "nbdkit", "qemu_nbd"):
            r = med[(s, job)]
            cells.append("%7.0f MiB/s %5.0fk" % (r["mib_s"], r["iops"] / 1000))
        rk, rk_r = ratio(by[("bdfilterd", job)], by[("nbdkit", job)])
        rq, rq_r = ratio(by[("bdfilterd", job)], by[("qemu_nbd", job)])
        ratios.append({"job": job, "ratio_nbdkit": rk, "ratio_qemu_nbd": rq,
                       "ratio_nbdkit_rounds": rk_r, "ratio_qemu_nbd_rounds": rq_r})
        print("%-10s | %s | %s | %s | %8.2f | %8.2f" % (job, cells[0], cells[1], cells[2], rk, rq))
    nrounds = len(rows[0]["runs_iops"])
    print()
    print("medians of %d rounds; ratios are bdfilterd IOPS / other IOPS (same block size)" % nrounds)
    print("per-round ratios, min-max: " + "; ".join(
        "%s %.2f-%.2f / %.2f-%.2f" % (r["job"], min(r["ratio_nbdkit_rounds"]), max(r["ratio_nbdkit_rounds"]),
                                      min(r["ratio_qemu_nbd_rounds"]), max(r["ratio_qemu_nbd_rounds"]))
        for r in ratios))
    names = {"bdfilterd": "bdfilterd", "nbdkit": "nbdkit", "qemu_nbd": "qemu-nbd"}
    print_spread("servers, the %d rounds (spread: (max - min) / median of IOPS)" % nrounds,
                 [(names.get(s, s), j, by[(s, j)]) for j in jobs for s in ("bdfilterd", "nbdkit", "qemu_nbd")])
    out["results"] = rows
    out["ratios"] = ratios


def pairs_section(runs, out):
    pairs, groups = [], []
    for key in dict.fromkeys((r["pair"], r["job"]) for r in runs):
        sides = list(dict.fromkeys(r["server"] for r in runs if (r["pair"], r["job"]) == key))
        mine = {sv: [r for r in runs if (r["pair"], r["job"], r["server"]) == key + (sv,)] for sv in sides}
        a, b = sides[0], sides[1]
        ia, ib = summary(mine[a], "iops"), summary(mine[b], "iops")
        ma, mb = summary(mine[a], "mib_s"), summary(mine[b], "mib_s")
        rat, rounds = ratio(mine[a], mine[b])
        pairs.append({"pair": key[0], "job": key[1], "a": a, "b": b,
                      "iops_a": ia["median"], "iops_b": ib["median"],
                      "mib_a": ma["median"], "mib_b": mb["median"], "ratio": rat,
                      "iops_a_min": ia["min"], "iops_a_max": ia["max"],
                      "iops_b_min": ib["min"], "iops_b_max": ib["max"],
                      "runs_iops_a": ia["runs"], "runs_iops_b": ib["runs"], "ratio_rounds": rounds})
        groups += [(a, key[1], mine[a]), (b, key[1], mine[b])]
    print()
    print("%-9s %-10s | %-20s %-18s | %-20s %-18s | %6s %11s" % ("pair", "job", "a", "", "b", "", "a/b",
                                                                 "rounds a/b"))
    print("-" * 124)
    for p in pairs:
        print("%-9s %-10s | %-20s %7.0f MiB/s %4.0fk | %-20s %7.0f MiB/s %4.0fk | %6.2f %5.2f-%-5.2f" % (
            p["pair"], p["job"], p["a"], p["mib_a"], p["iops_a"] / 1000, p["b"], p["mib_b"], p["iops_b"] / 1000,
            p["ratio"], min(p["ratio_rounds"]), max(p["ratio_rounds"])))
    print()
    print("medians; a/b is the ratio of the medians, 'rounds a/b' the range of the per-round ratios")
    print("tracker: tracker attached vs no filter (goal >= 0.97); snapshot: random writes while a snapshot")
    print("is held vs qemu-storage-daemon copy-before-write (goal >= 2; warm cache, measured after a 1 s ramp:")
    print("mostly steady state; first touch: the cbw section); image: image reads vs origin reads")
    print_spread("pairs, the rounds (spread: (max - min) / median of IOPS)", groups)
    out["pairs"] = pairs


# The copy-before-write section (bench/cbw.sh): jobs, the servers in each, ratios.
CBW_NAMES = {
    "bdf_snap": "(a) bdfilterd, snapshot, 256 KiB chunks (default)",
    "bdf_snap64": "(b) bdfilterd, snapshot, 64 KiB chunks (chunk_minimum_shift=16)",
    "qsd_cbw": "(c) qemu-storage-daemon, copy-before-write, 64 KiB clusters",
    "bdf_tracker": "(d) bdfilterd, tracker, no snapshot",
    "bdf_plain": "(e) bdfilterd, no filter",
    "bdf_snap_full": "(a) bdfilterd, snapshot, every chunk copied already",
}
CBW_UNITS = {"seq-write": "mib_s"}  # the others: IOPS
CBW_RATIOS = [  # job, a, b, goal (None: for information), name
    ("first-touch", "bdf_snap", "qsd_cbw", 2.0, "first-touch (a) / (c) qsd"),
    ("first-touch", "bdf_snap", "bdf_tracker", 0.25, "first-touch (a) / (d) no snapshot"),
    ("first-touch", "bdf_snap64", "qsd_cbw", None, "first-touch (b) / (c) qsd"),
    ("first-touch", "bdf_snap64", "bdf_tracker", None, "first-touch (b) / (d) no snapshot"),
    ("first-touch", "bdf_tracker", "bdf_plain", None, "first-touch (d) / (e) no filter"),
    ("steady", "bdf_snap_full", "bdf_tracker", 0.9, "steady (a) / (d) no snapshot"),
    ("seq-write", "bdf_snap", "qsd_cbw", 1.5, "seq-write (a) / (c) qsd"),
    ("seq-write", "bdf_snap64", "qsd_cbw", None, "seq-write (b) / (c) qsd"),
    ("seq-write", "bdf_snap", "bdf_tracker", None, "seq-write (a) / (d) no snapshot"),
]


WIL_NAMES = {
    "bdf_wil": "(w) bdfilterd, tracker, --state-dir: every log region clean",
    "bdf_wil_dirty": "(w) bdfilterd, tracker, --state-dir: every log region dirty",
    "bdf_tracker": "(t) bdfilterd, tracker, no --state-dir (no log)",
}
WIL_RATIOS = [
    ("first-touch", "bdf_wil", "bdf_tracker", 0.5, "first-touch (w) / (t) no log"),
    ("steady", "bdf_wil_dirty", "bdf_tracker", 0.95, "steady (w) / (t) no log"),
]


MIRROR_NAMES = {
    "mirror_resync": "(m) bdfilterd mirror_start, no rate limit, until synced",
    "nbdcopy": "(n) nbdcopy of the export to a fresh file",
    "bdf_mirror": "(m) bdfilterd, a resync running",
    "bdf_nomirror": "(n) bdfilterd, no mirror",
}
MIRROR_RATIOS = [
    ("copy", "mirror_resync", "nbdcopy", 0.8, "copy (m) / (n) nbdcopy"),
    ("writes", "bdf_mirror", "bdf_nomirror", 0.5, "writes (m) / (n) no mirror"),
]


TLS_NAMES = {
    "bdf_tls": "(b) bdfilterd --tls require, X.509",
    "nbdkit_tls": "(k) nbdkit --tls=require, the same credentials",
}
TLS_UNITS = {"seqread": "mib_s", "seqwrite": "mib_s"}
TLS_RATIOS = [(job, "bdf_tls", "nbdkit_tls", 1.0, "%s (b) / (k) nbdkit" % job)
              for job in ("seqread", "seqwrite", "randread", "randwrite")]


def mirror_section(runs, out, method):
    jobs_section("mirror", runs, out, method, MIRROR_NAMES, {"copy": "mib_s"}, MIRROR_RATIOS)


def cbw_section(runs, out, method):
    jobs_section("cbw", runs, out, method, CBW_NAMES, CBW_UNITS, CBW_RATIOS)


def wil_section(runs, out, method):
    jobs_section("wil", runs, out, method, WIL_NAMES, {}, WIL_RATIOS)


def jobs_section(section, runs, out, method, names, units, ratio_table):
    CBW_NAMES, CBW_UNITS, CBW_RATIOS = names, units, ratio_table
    jobs = list(dict.fromkeys(r["job"] for r in runs if r["job"] != "prefill"))
    res, by = [], {}
    for job in jobs:
        first = next(r for r in runs if r["job"] == job)
        unit = CBW_UNITS.get(job, "iops")
        print()
        print("%s %s: %s" % (section, job, method.get("jobs", {}).get(job, "")))
        print("%-66s | %7s %7s %7s %-5s | %6s | %7s | %8s" % (
            "server", "min", "median", "max", "", "spread", "p99 ms", "copied"))
        print("-" * 124)
        for sv in dict.fromkeys(r["server"] for r in runs if r["job"] == job):
            mine = [r for r in runs if (r["job"], r["server"]) == (job, sv)]
            by[(job, sv)] = mine
            s = summary(mine, unit)
            p99 = statistics.median(r["clat_p99_ms"] for r in mine)
            copied = statistics.median(r.get("copied_mib", 0) for r in mine)
            fmt = kilo if unit == "iops" else (lambda x: "%.0f" % x)
            print("%-66s | %7s %7s %7s %-5s | %5.0f%% | %7.2f | %8s" % (
                CBW_NAMES.get(sv, sv), fmt(s["min"]), fmt(s["median"]), fmt(s["max"]),
                "IOPS" if unit == "iops" else "MiB/s", s["spread_pct"], p99,
                "%.0f MiB" % copied if copied else "-"))
            res.append({"job": job, "server": sv, "label": CBW_NAMES.get(sv, sv), "unit": unit,
                        "min": s["min"], "median": s["median"], "max": s["max"], "runs": s["runs"],
                        "spread_pct": s["spread_pct"], "clat_p99_ms_median": p99, "copied_mib_median": copied,
                        "runs_iops": [r["iops"] for r in mine], "runs_mib_s": [r["mib_s"] for r in mine],
                        "runs_load1": [r.get("load1") for r in mine]})
    ratios = []
    print()
    print("%-36s | %6s | %-11s | %7s | %s" % (section + " ratio (of medians)", "ratio", "rounds", "goal", ""))
    print("-" * 80)
    for job, a, b, goal, name in CBW_RATIOS:
        if (job, a) not in by or (job, b) not in by:
            continue
        key = CBW_UNITS.get(job, "iops")
        med, rounds = ratio(by[(job, a)], by[(job, b)], key)
        verdict = "" if goal is None else ("met" if med >= goal else "missed")
        print("%-36s | %6.2f | %5.2f-%-5.2f | %7s | %s" % (
            name, med, min(rounds), max(rounds), "" if goal is None else ">= %g" % goal, verdict))
        ratios.append({"name": name, "job": job, "a": a, "b": b, "ratio": med, "ratio_rounds": rounds,
                       "goal": goal, "met": None if goal is None else med >= goal})
    loads = [r["load1"] for r in runs if "load1" in r]
    print()
    print("rounds: %d; 'rounds' is the range of the per-round ratios; goals are for the developers,"
          % max(len(v) for v in by.values()))
    print("the bench never fails on one. 1-min load average at the runs: %.2f-%.2f" % (min(loads), max(loads)))
    prefill = [r for r in runs if r["job"] == "prefill"]
    if section != "cbw":
        prefill = []
    cbw = {"method": method, "jobs": res, "ratios": ratios,
           "load1_min": min(loads), "load1_max": max(loads)}
    if prefill:
        p = prefill[0]
        print("steady state prefill (every chunk copied): %.0f MiB/s, %.1f s, %.0f MiB copied" % (
            p["mib_s"], p["seconds"], p.get("copied_mib", 0)))
        cbw["prefill"] = p
    out[section] = cbw


def report(runs_path, out_path):
    runs = [json.loads(l) for l in open(runs_path) if l.strip()]
    bad = [r for r in runs if r["error"] != 0]
    assert not bad, "fio reported an error: %r" % bad
    out = {}
    sections = list(dict.fromkeys(r["section"] for r in runs))
    if "servers" in sections:
        servers_section([r for r in runs if r["section"] == "servers"], out)
    if "pairs" in sections:
        pairs_section([r for r in runs if r["section"] == "pairs"], out)
    if "cbw" in sections:
        method_path = os.path.join(os.path.dirname(runs_path), "cbw-method.json")
        method = json.load(open(method_path)) if os.path.exists(method_path) else {}
        cbw_section([r for r in runs if r["section"] == "cbw"], out, method)
    if "mirror" in sections:
        method_path = os.path.join(os.path.dirname(runs_path), "mirror-method.json")
        method = json.load(open(method_path)) if os.path.exists(method_path) else {}
        mirror_section([r for r in runs if r["section"] == "mirror"], out, method)
    if "tls" in sections:
        method_path = os.path.join(os.path.dirname(runs_path), "tls-method.json")
        method = json.load(open(method_path)) if os.path.exists(method_path) else {}
        jobs_section("tls", [r for r in runs if r["section"] == "tls"], out, method, TLS_NAMES, TLS_UNITS,
                     TLS_RATIOS)
    if "wil" in sections:
        method_path = os.path.join(os.path.dirname(runs_path), "wil-method.json")
        method = json.load(open(method_path)) if os.path.exists(method_path) else {}
        wil_section([r for r in runs if r["section"] == "wil"], out, method)
    out["meta"] = {"sections": sections, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "nproc": os.cpu_count(), "loadavg_end": open("/proc/loadavg").read().split()[:3]}
    json.dump(out, open(out_path, "w"), indent=1)
    print()
    print("results: " + out_path)


if __name__ == "__main__":
    if sys.argv[1] == "fio":
        fio_line(sys.argv[2], sys.argv[3:])
    elif sys.argv[1] == "report":
        report(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: report.py fio FIO_JSON KEY=VALUE... | report RUNS_JSONL OUT_JSON")
