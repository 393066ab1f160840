"""The paper-vs-measured table of ``tools/reproduce.py``: runs -> results.md / .csv / .png.

A run directory holds ``run.json`` (what ran: task, backbone, config, dataset, kind) and, once
evaluated, ``results.json`` (written by :func:`resnest_dense.engine.write_results`); a plain
``tools/train_net.py`` run without it falls back to the last evaluation scalars of
``metrics.json``. The paper's numbers are ``paper_results.json`` next to this module;
``beyond_paper_results.json`` adds rows the paper has no number for (ResNeSt on detectron2's
new-baseline recipe), whose "Paper" column is a named reference (detectron2's ResNet numbers).
"""

import csv
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional

from ..utils.io import atomic_write

__all__ = ["METRICS", "TOY_LABEL", "build_table", "collect", "paper_rows", "read_runs", "run_id"]

logger = logging.getLogger(__name__)

PAPER_RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper_results.json")
BEYOND_PAPER_RESULTS = os.path.join(os.path.dirname(PAPER_RESULTS), "beyond_paper_results.json")

# Paper metric name -> (detectron2 results task, key).
METRICS = OrderedDict(
    [
        ("box_AP", ("bbox", "AP")),
        ("mask_AP", ("segm", "AP")),
        ("mIoU", ("sem_seg", "mIoU")),
        ("pixAcc", ("sem_seg", "pACC")),
        ("PQ", ("panoptic_seg", "PQ")),
    ]
)
TOY_LABEL = "TOY smoke numbers (generated data, tiny networks, CPU): not paper reproductions"


def paper_rows(beyond: bool = False) -> List[Dict]:
    """Rows of ``resnest_dense/model_zoo/paper_results.json`` (and, with ``beyond``, those of
    ``beyond_paper_results.json``, each with a ``reference`` naming what its metrics are)."""
    with open(PAPER_RESULTS) as f:
        rows = json.load(f)["rows"]
    if beyond:
        with open(BEYOND_PAPER_RESULTS) as f:
            rows += json.load(f)["rows"]
    return rows


def run_id(row: Dict) -> str:
    return os.path.splitext(os.path.basename(row["config"]))[0]


def _metrics_from_run(run_dir: str) -> Dict[str, float]:
    """Paper metric -> value, from results.json or else metrics.json's last eval scalars."""
    found: Dict[str, float] = {}
    results_file = os.path.join(run_dir, "results.json")
    if os.path.isfile(results_file):
        with open(results_file) as f:
            results = json.load(f)["results"]
        for metric, (task, key) in METRICS.items():
            value = results.get(task, {}).get(key)
            if value is not None:
                found[metric] = float(value)
        return found
    metrics_file = os.path.join(run_dir, "metrics.json")
    if os.path.isfile(metrics_file):
        with open(metrics_file) as f:
            for line in f:
                record = json.loads(line)
                for metric, (task, key) in METRICS.items():
                    if f"{task}/{key}" in record:
                        found[metric] = float(record[f"{task}/{key}"])
    return found


def read_runs(root: str) -> List[Dict]:
    """Every run dir under ``root`` with a run.json, with its metrics."""
    runs = []
    for dirpath, _, files in sorted(os.walk(root)):
        if "run.json" in files:
            with open(os.path.join(dirpath, "run.json")) as f:
                info = json.load(f)
            info["dir"] = dirpath
            info["measured"] = _metrics_from_run(dirpath)
            runs.append(info)
    return runs


def _gain(values: Dict, key) -> Optional[float]:
    a, b = values.get(key[0]), values.get(key[1])
    return None if a is None or b is None else round(a - b, 2)


def build_table(runs: List[Dict]) -> List[Dict]:
    """One line per (task, backbone, metric): measured, paper, and the ResNeSt-ResNet gains."""
    paper = {(r["task"], r["backbone"]): r for r in paper_rows(beyond=True)}
    measured = {(r["task"], r["backbone"]): r for r in runs}
    lines = []
    for key, prow in paper.items():
        if key not in measured:
            continue
        run = measured[key]
        base = prow["baseline"]
        for metric in METRICS:
            if metric not in prow["metrics"]:
                continue
            m = run["measured"].get(metric)
            line = OrderedDict(
                task=key[0], backbone=key[1], metric=metric,
                run_kind=run.get("kind", ""), trained_backbone=run.get("smoke_backbone", key[1]),
                measured=None if m is None else round(m, 2), paper=prow["metrics"][metric],
                measured_gain=None, paper_gain=None, baseline=base or "",
                reference=prow.get("reference", "paper"),
            )  # fmt: skip
            if base:
                line["paper_gain"] = round(
                    prow["metrics"][metric] - paper[(key[0], base)]["metrics"][metric], 2
                )
                base_run = measured.get((key[0], base))
                if base_run and m is not None and metric in base_run["measured"]:
                    line["measured_gain"] = round(m - base_run["measured"][metric], 2)
            lines.append(line)
    return lines


def _cell(v) -> str:
    return "" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))


def write_markdown(lines: List[Dict], path: str, toy: bool) -> None:
    head = ["task", "backbone", "trained_backbone", "metric", "measured", "paper",
            "measured_gain", "paper_gain"]  # fmt: skip
    titles = ["Task", "Backbone", "Trained as", "Metric", "Measured", "Paper",
              "Measured gain (S - R)", "Paper gain (S - R)"]  # fmt: skip
    out = ["# ResNeSt vs ResNet: measured beside the paper", ""]
    if toy:
        out += [f"**{TOY_LABEL}.**", ""]
    out += ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for line in lines:
        out.append("| " + " | ".join(_cell(line[h]) for h in head) + " |")
    out += ["", "Gains are ResNeSt minus the ResNet row of the same depth (paper: 'baseline')."]
    if any(line["reference"] != "paper" for line in lines):
        out += [
            "",
            "Beyond the paper (tasks 'Mask R-CNN LSJ ...'): the Paper column holds detectron2's "
            "published ResNet-FPN new-baseline number of the same depth and schedule (MODEL_ZOO.md, "
            "trained from scratch), a reference, not a ResNeSt result.",
        ]
    atomic_write(path, lambda f: f.write("\n".join(out) + "\n"), mode="w")


def write_csv(lines: List[Dict], path: str) -> None:
    def write(f):
        writer = csv.DictWriter(f, fieldnames=list(lines[0]) if lines else ["task"])
        writer.writeheader()
        writer.writerows(lines)

    atomic_write(path, write, mode="w")


def write_png(lines: List[Dict], path: str, toy: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in METRICS if any(line["metric"] == m for line in lines)]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(5 * max(1, len(metrics)), 4.5))
    axes = axes if hasattr(axes, "__len__") else [axes]
    for ax, metric in zip(axes, metrics):
        sel = [line for line in lines if line["metric"] == metric]
        labels = [f"{line['task']}\n{line['backbone']}" for line in sel]
        xs = range(len(sel))
        ax.bar([x - 0.2 for x in xs], [line["measured"] or 0 for line in sel], 0.4,
               label="measured (toy)" if toy else "measured")  # fmt: skip
        ax.bar([x + 0.2 for x in xs], [line["paper"] for line in sel], 0.4, label="paper")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(metric)
        ax.legend(fontsize=7)
    fig.suptitle(TOY_LABEL if toy else "ResNeSt vs ResNet: measured and paper", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)


def collect(root: str, out_dir: Optional[str] = None) -> List[Dict]:
    """Write results.md / results.csv / results.png for the runs under ``root``."""
    runs = read_runs(root)
    if not runs:
        raise FileNotFoundError(f"no run.json under {root}: nothing to collect")
    lines = build_table(runs)
    out_dir = out_dir or root
    os.makedirs(out_dir, exist_ok=True)
    toy = any(r.get("kind") == "toy" for r in runs)
    write_markdown(lines, os.path.join(out_dir, "results.md"), toy)
    write_csv(lines, os.path.join(out_dir, "results.csv"))
    write_png(lines, os.path.join(out_dir, "results.png"), toy)
    logger.info("Collected %d runs into %s/results.{md,csv,png}", len(runs), out_dir)
    with open(os.path.join(out_dir, "results.md")) as f:
        logger.info("\n%s", f.read())
    return lines
