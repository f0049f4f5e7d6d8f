"""``report.html`` of ``obliviate learn`` (strategies over a task sequence) and of ``obliviate requests`` (a stream of
learn and forget requests): a view of the ``report.json`` already in the run folder, redrawn by
``write_learn_report(run_dir)`` / ``write_requests_report(run_dir)``. The page shell, escaping and number format are
``page.py``'s; the plots are drawn here in ``plots.py``'s style.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..io import write_text
from .page import document, esc, figure_html, fmt, now
from .plots import _CYCLE, _figure, _style

TABLE_COLUMNS = [("avg_acc", "final average accuracy"), ("avg_vs_multitask", "over multi-task's"),
                 ("task1_learned", "task 1 just learned"), ("task1_final", "task 1 at the end"),
                 ("task1_kept", "task 1 kept (ratio)"), ("bwt", "backward transfer"), ("fwt", "forward transfer"),
                 ("min_acc", "min-ACC"), ("wc_acc", "WC-ACC"), ("general_retention", "general retention"),
                 ("superficial_forgetting", "superficially forgotten items"),
                 ("essential_forgetting", "essentially forgotten items")]


def stability_gap(results: dict[str, dict], names: list[str]):
    """One panel per strategy: every task's accuracy at each evaluation step, task ends dashed."""
    names = [n for n in names if n in results and len(results[n]["ends"]) > 1]
    if not names:
        return None
    fig = _figure(6.4, 2.3 * len(names))
    axes = fig.subplots(len(names), 1, squeeze=False, sharex=True)[:, 0]
    for ax, name in zip(axes, names):
        r = results[name]
        steps = [e["step"] for e in r["evaluations"]]
        for j, task in enumerate(r["tasks"]):
            ax.plot(steps, [e["acc"][task] for e in r["evaluations"]], color=_CYCLE[j % len(_CYCLE)], lw=1.2,
                    label=task)
        if r["evaluations"] and "general" in r["evaluations"][0]:
            ax.plot(steps, [e["general"] for e in r["evaluations"]], color="#555", lw=1, ls=":", label="general")
        for end in r["ends"]:
            ax.axvline(end, color="#999", lw=0.8, ls="--")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("accuracy", fontsize=8)
        ax.set_title(name, fontsize=9)
        _style(ax)
    axes[0].legend(fontsize=7, ncol=4, loc="lower left")
    axes[-1].set_xlabel("optimizer step (whole sequence)", fontsize=8)
    return fig


def module_table(changes: list[dict]) -> list[tuple[str, list[float]]]:
    """Per module (parameter tensors grouped by name without ``.weight``/``.bias``): its relative change in each
    stage, largest mean change first."""
    modules: dict[str, list[float]] = {}
    for k, stage in enumerate(changes):
        for param, value in stage["change"].items():
            name = re.sub(r"\.(weight|bias)$", "", param)
            row = modules.setdefault(name, [0.0] * len(changes))
            row[k] = max(row[k], value)
    return sorted(modules.items(), key=lambda kv: -sum(kv[1]) / len(kv[1]))


def module_plot(rows: list[tuple[str, list[float]]], top: int = 20):
    if not rows:
        return None
    rows = rows[:top]
    fig = _figure(6.4, 0.22 * len(rows) + 0.9)
    ax = fig.subplots()
    ax.barh(range(len(rows)), [sum(v) / len(v) for _, v in rows], color=_CYCLE[0])
    ax.set_yticks(range(len(rows)), [n for n, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("mean relative weight change per task  ||Δθ|| / ||θ||", fontsize=8)
    _style(ax)
    return fig


def _table(head: list[str], rows: list[list]) -> str:
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{esc(fmt(c) if not isinstance(c, str) else c)}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def learn_page(report: dict) -> str:
    results = report["strategies"]
    parts = [f'<header class="top"><h1>Continual learning: {len(report["tasks"])} tasks, {len(results)} '
             f'strategies</h1><p>model {esc(report["model"])}, data {esc(report["data"])}; accuracy = '
             f'{esc(report["accuracy"])}; evaluated every {report["eval_every"]} steps. {esc(now())}</p></header>']
    parts.append("<h2>Strategies</h2>")
    parts.append(_table(["strategy", *[label for _, label in TABLE_COLUMNS], "seconds"],
                        [[r["strategy"], *[r.get(k) for k, _ in TABLE_COLUMNS], results[r["strategy"]]["seconds"]]
                         for r in report["table"]]))
    for name, why in report.get("failed", {}).items():
        parts.append(f'<p class="note">{esc(name)} stopped: {esc(why)}</p>')
    curves = [n for n in ("sequential", "replay") if n in results] or list(results)[:2]
    curves += [n for n in results if n not in curves and n != "multitask"]
    parts.append("<h2>Continual evaluation: the stability gap</h2>")
    parts.append(figure_html(lambda: stability_gap(results, curves),
                             "Accuracy on every task at each evaluation; dashed lines end a task. The dip of an "
                             "earlier task right after a new one starts is the stability gap end-of-task evaluation "
                             "hides.", "stability gap curves", wide=True))
    parts.append("<h2>Accuracy matrices</h2>")
    for name, r in results.items():
        parts.append(f"<h3>{esc(name)}</h3>")
        parts.append(_table(["after \\ on", *r["tasks"]], [[stage, *row] for stage, row in
                                                          zip(r["stages"], r["accuracy_matrix"])]))
    seq = results.get("sequential") or next(iter(results.values()))
    rows = module_table(seq["module_changes"])
    parts.append(f"<h2>Per-module forgetting ({esc(seq['strategy'])})</h2>")
    parts.append(figure_html(lambda: module_plot(rows), "Modules whose weights move most between tasks (the FPF "
                             "analysis).", "per-module change"))
    parts.append(_table(["module", *[c["stage"] for c in seq["module_changes"]]], [[n, *v] for n, v in rows[:40]]))
    return document("obliviate learn", "\n".join(parts))


def write_learn_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    write_text(run_dir / "report.html", learn_page(report))
    return run_dir / "report.html"


def request_curves(history: list[dict]):
    """Two panels across the request sequence: learned tasks' accuracy ratio and utility; forget quality per author."""
    if not history:
        return None
    fig = _figure(6.4, 4.6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    x = list(range(1, len(history) + 1))
    tasks = list(dict.fromkeys(t for h in history for t in h["learned"]))
    for j, task in enumerate(tasks):
        pts = [(i, h["learned"][task]["ratio"]) for i, h in zip(x, history) if task in h["learned"]]
        top.plot(*zip(*pts), marker="o", color=_CYCLE[j % len(_CYCLE)], lw=1.2, label=f"{task} kept")
    top.plot(x, [h.get("general_ratio") for h in history], marker="s", color="#555", ls=":", label="general")
    top.axhline(0.9, color="#999", lw=0.8, ls="--")
    top.set_ylabel("accuracy / when learned", fontsize=8)
    top.legend(fontsize=7, ncol=3)
    authors = list(dict.fromkeys(a for h in history for a in h["forgotten"]))
    for j, author in enumerate(authors):
        pts = [(i, h["forgotten"][author]["forget_quality"]) for i, h in zip(x, history) if author in h["forgotten"]]
        bottom.plot(*zip(*pts), marker="o", color=_CYCLE[(j + 3) % len(_CYCLE)], label=f"forget {author}")
    bottom.axhline(0.1, color="#999", lw=0.8, ls="--")
    bottom.set_yscale("log")
    bottom.set_ylabel("forget quality", fontsize=8)
    if authors:
        bottom.legend(fontsize=7)
    bottom.set_xticks(x, [f"{h['kind']} {h['target']}"[:18] for h in history], rotation=30, ha="right", fontsize=7)
    for ax in (top, bottom):
        _style(ax)
    return fig


def requests_page(report: dict) -> str:
    hist = report["history"]
    parts = [f'<header class="top"><h1>Learn and forget requests: {len(hist)} requests</h1><p>learn with '
             f'{esc(report["learn_strategy"])}, forget with {esc(report["forget_method"])}; model '
             f'{esc(report["model"])}; accuracy = {esc(report["accuracy"])}. {esc(now())}</p></header>',
             "<h2>Across the requests</h2>",
             figure_html(lambda: request_curves(hist), "Top: each learned task's accuracy over its value right after "
                         "it was learned, and general knowledge over the start (dashed: 0.9). Bottom: forget quality "
                         "of each forgotten author against the oracle trained on exactly what should remain "
                         "(dashed: 0.1).", "request curves", wide=True),
             "<h2>After each request</h2>"]
    rows = []
    for h in hist:
        kept = ", ".join(f"{t} {fmt(v['ratio'])}" for t, v in h["learned"].items())
        fq = ", ".join(f"{a} {fmt(v['forget_quality'])}" for a, v in h["forgotten"].items())
        rows.append([h["request"], f"{h['kind']} {h['target']}", kept, fq or "-", h["general"], h["seconds"]])
    parts.append(_table(["#", "request", "learned tasks kept", "forget quality", "general accuracy", "seconds"],
                        rows))
    return document("obliviate requests", "\n".join(parts))


def write_requests_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    write_text(run_dir / "report.html", requests_page(report))
    return run_dir / "report.html"
