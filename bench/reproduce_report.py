#!/usr/bin/env python3
"""reproduce_report.py: docs/results.md from the run folder of bench/reproduce.

Reads OUT/eval/*.json (`dsc eval all` results), OUT/runs/*/metrics.jsonl (step times) and
OUT/commands.txt, and writes the tables shaped like the paper's Table 4 (methods x protocols),
Table 5 (granularity) and Fig. 5 (number of clusters of dsc-km, with step time), each main number
as the mean over seeds with its spread (min..max), plus the configuration, the commands and the
pictures. Standard library only (runs with any python3).

    python3 bench/reproduce_report.py --out runs/reproduce --doc docs/results.md --seeds "0 1" --ks "10 25 200"
"""
import argparse
import json
import os
import statistics

METHODS = ["moco-v2", "densecl", "dsc-nei", "dsc-tri", "dsc-ce", "dsc-km", "dsc-pm"]
# (column title, path in the eval JSON, scale to percent)
COLUMNS = [
    ("dense probe mIoU", ("seg", "miou")),
    ("cluster mIoU", ("cluster", "miou")),
    ("k-NN top-1", ("knn", "top1")),
    ("linear top-1", ("linear", "top1")),
    ("dense probe pixel acc.", ("seg", "pixel_acc")),
    ("fine-tuned FCN mIoU", ("finetune", "miou")),
]


def load_eval(out, name):
    path = os.path.join(out, "eval", name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def load_finetune(out, name):
    path = os.path.join(out, "finetune", name, "eval.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def metric(ev, path):
    node = ev.get("results", {}) if ev else {}
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if node is not None else None


def values(out, row, seeds, path):
    vals = []
    for s in seeds:
        if path[0] == "finetune":
            ft = load_finetune(out, f"{row}-s{s}")
            v = ft.get(path[1]) if ft else None
            v = float(v) if v is not None else None
        else:
            v = metric(load_eval(out, f"{row}-s{s}"), path)
        if v is not None:
            vals.append(100.0 * v)
    return vals


def cell(vals):
    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:.1f}"
    return f"{statistics.mean(vals):.1f} ({min(vals):.1f}–{max(vals):.1f})"


def step_time(out, run):
    """Median seconds per step over the logged steps after the first (from img_per_s and batch)."""
    path = os.path.join(out, "runs", run, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    ips = []
    with open(path) as f:
        for line in f:
            try:
                ips.append(json.loads(line)["img_per_s"])
            except (ValueError, KeyError):
                pass
    ips = [v for v in ips[1:] if v > 0]
    if not ips:
        return None
    batch = None
    cfg = os.path.join(out, "runs", run, "config.ini")
    if os.path.exists(cfg):
        for line in open(cfg):
            if line.strip().startswith("batch"):
                batch = int(line.split("=")[1])
    return batch / statistics.median(ips) if batch else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--doc", required=True)
    ap.add_argument("--seeds", default="0 1")
    ap.add_argument("--ks", default="")
    ap.add_argument("--minutes", default="?")
    ap.add_argument("--config", default="")
    a = ap.parse_args()
    seeds = a.seeds.split()
    ks = [int(k) for k in a.ks.split()]
    out = a.out
    lines = []
    w = lines.append
    w("# Results: the dense benchmark on Fashion-MNIST scenes")
    w("")
    w("Produced by `bench/reproduce` (issues #5 and #9); every number below was measured by it on this "
      f"machine (its last invocation took {a.minutes} minutes; stages whose outputs already existed were "
      "skipped, and OUT/reproduce.log has each stage's start time). Configuration: "
      f"`{a.config}`.")
    w("Each method pretrains a ResNet from scratch on the train scenes with the same budget, seed(s) "
      "and METHOD.md defaults otherwise; every backbone is then frozen and evaluated with every "
      "protocol of METHOD.md §7 by `dsc eval all` (docs/eval.md), and fine-tuned with an FCN head by "
      "`dsc finetune seg` (the paper's transfer protocol, docs/finetune.md; the same budget for every "
      "backbone, fine-tuning seed = pretraining seed). Numbers are percentages; a main "
      f"row is the mean over seeds {', '.join(seeds)} with the range (min–max) in brackets.")
    w("The larger configuration for a GPU machine (run.device=cuda, docs/gpu.md) is `DEVICE=cuda SIZE=64 "
      "TRAIN=10000 VAL=2000 STEPS=3000 BATCH=128 QUEUE=8192 bench/reproduce`; it was not run in this "
      "session (no GPU time left), so every number here is from the CPU configuration above.")
    w("")
    w("## Table 4 (shape of the paper's): methods x protocols")
    w("")
    w("| pretraining | " + " | ".join(c[0] for c in COLUMNS) + " |")
    w("|---|" + "---|" * len(COLUMNS))
    rows = ["random"] + METHODS
    means = {}
    for r in rows:
        cells = []
        for title, path in COLUMNS:
            vals = values(out, r, seeds, path)
            means[(r, title)] = statistics.mean(vals) if vals else None
            cells.append(cell(vals))
        label = "random init" if r == "random" else r
        w(f"| {label} | " + " | ".join(cells) + " |")
    w("")
    w("## Table 5 (shape of the paper's): granularity of the contrast")
    w("")
    w("| terms | method | dense probe mIoU | cluster mIoU | k-NN top-1 |")
    w("|---|---|---|---|---|")
    for terms, m in [("instance", "moco-v2"), ("instance + pixel", "densecl"),
                     ("instance + pixel + semantic (k-means)", "dsc-km"),
                     ("instance + pixel + semantic (prototypes)", "dsc-pm")]:
        w(f"| {terms} | {m} | " + " | ".join(cell(values(out, m, seeds, p)) for _, p in COLUMNS[:3]) + " |")
    w("")
    if ks:
        w("## Fig. 5 (shape of the paper's): number of clusters of dsc-km")
        w("")
        w(f"Seed {seeds[0]}; K = 100 is the main row's run. Step time: median seconds per training "
          "step from the run's metrics.jsonl.")
        w("")
        w("| K | dense probe mIoU | cluster mIoU | k-NN top-1 | s/step |")
        w("|---|---|---|---|---|")
        allk = sorted(set(ks + [100]))
        for k in allk:
            name = f"dsc-km-s{seeds[0]}" if k == 100 else f"dsc-km-k{k}-s{seeds[0]}"
            ev = load_eval(out, name)
            vals = [metric(ev, p) for _, p in COLUMNS[:3]]
            st = step_time(out, name)
            w(f"| {k} | " + " | ".join("—" if v is None else f"{100 * v:.1f}" for v in vals) +
              f" | {'—' if st is None else f'{st:.3f}'} |")
        w("")
    w("## What the numbers say")
    w("")
    dm = {m: means.get((m, "dense probe mIoU")) for m in rows}
    known = [m for m in rows if dm[m] is not None]
    if known:
        order = sorted(known, key=lambda m: -dm[m])
        w("Dense-probe mIoU, best first: " + ", ".join(f"{m} {dm[m]:.1f}" for m in order) + ".")
        paper = all(dm.get(x) is not None for x in ("moco-v2", "densecl", "dsc-km", "dsc-pm"))
        if paper:
            holds = (dm["densecl"] > dm["moco-v2"] and max(dm["dsc-km"], dm["dsc-pm"]) > dm["densecl"])
            w("The paper's ordering (DSC above DenseCL above MoCo-v2 on dense tasks) "
              + ("holds" if holds else "does not hold") + " on this benchmark at this budget "
              "(means over seeds; compare the differences with the ranges above before reading much "
              "into them).")
    w("")
    w("DISCUSSION_PLACEHOLDER")
    w("")
    w("## Pictures")
    w("")
    w("Loss curves (seed " + seeds[0] + "), `dsc viz curves`:")
    w("")
    w("![loss curves](img/reproduce_curves.png)")
    w("")
    w("Validation scenes: image, mask, then per backbone (random init, moco-v2, densecl, dsc-km, dsc-pm; "
      "seed " + seeds[0] + ") the PCA-to-RGB map of C5, its k-means cluster map and the dense probe's "
      "prediction, `dsc viz maps --probe`:")
    w("")
    w("![feature maps](img/reproduce_maps.png)")
    w("")
    w("Grad-CAM (the paper's Fig. 6) of C5 for moco-v2, densecl, dsc-km and dsc-pm (seed " + seeds[0] + "), "
      "`dsc viz gradcam` (docs/viz.md): target = the mean cosine similarity of every C5 cell to the cell of "
      "the image centre (marked with a cross); first column the validation scene:")
    w("")
    w("![Grad-CAM](img/reproduce_gradcam.png)")
    w("")
    w("## Commands")
    w("")
    w("Everything above comes from `bench/reproduce` (see its header for the configuration variables); "
      "the commands it ran, in order:")
    w("")
    w("```")
    cmds = os.path.join(out, "commands.txt")
    if os.path.exists(cmds):
        for line in open(cmds):
            w(line.rstrip().replace(os.getcwd() + "/", ""))
    w("```")
    text = "\n".join(lines) + "\n"
    if os.path.exists(a.doc):
        old = open(a.doc).read()
        # Keep a hand-written discussion across regenerations.
        if "<!-- discussion -->" in old:
            disc = old.split("<!-- discussion -->")[1]
            text = text.replace("DISCUSSION_PLACEHOLDER", "<!-- discussion -->" + disc + "<!-- discussion -->")
    text = text.replace("DISCUSSION_PLACEHOLDER", "<!-- discussion -->\n(discussion to be written after "
                        "reading the numbers)\n<!-- discussion -->")
    with open(a.doc, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
