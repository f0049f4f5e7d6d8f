"""The report's plots, drawn with matplotlib's Agg canvas (no display, no pyplot state) and returned as PNG bytes.

Every function takes plain numbers (the lists in ``report.json`` or the records of ``metrics.jsonl``) and returns a
``matplotlib.figure.Figure``, or ``None`` when there is nothing to draw. ``png(fig)`` turns a figure into PNG bytes.
``pareto_front`` is a pure function, kept here beside the plot that marks it.
"""

from __future__ import annotations

import io
import math
from typing import Iterable, Sequence

import numpy as np

# one colour per role, used by every plot and by the HTML tables
COLORS = {"target": "#c0392b", "oracle": "#27864a", "unlearned": "#2c6fbb"}
_CYCLE = ["#2c6fbb", "#c0392b", "#27864a", "#8e44ad", "#d68910", "#17a2b8", "#7f8c8d", "#e84393", "#2d3436"]
_DPI = 144
# keys of a metrics.jsonl record that are bookkeeping, not something the method optimises or tracks
_BOOKKEEPING = {"step", "epoch", "lr", "elapsed_s"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style(ax) -> None:
    ax.grid(True, color="#e3e3e3", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)


def png(fig) -> bytes:
    """The figure as PNG bytes (the figure is not kept by any global state, so nothing needs closing)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, facecolor="white")
    return buf.getvalue()


def model_colors(names: Iterable[str], main: str | None = None) -> dict[str, str]:
    """A colour per model: the fixed role colours for target / oracle, blue for the main (unlearned) model."""
    out, spare = {}, [c for c in _CYCLE if c not in COLORS.values()]
    for name in names:
        if name in COLORS:
            out[name] = COLORS[name]
        elif name == main:
            out[name] = COLORS["unlearned"]
        else:
            out[name] = spare[len([n for n in out if n not in COLORS and n != main]) % len(spare)]
    return out


def _finite(values) -> np.ndarray:
    a = np.asarray([v for v in values if v is not None], dtype=float)
    return a[np.isfinite(a)]


def truth_ratio_histogram(truth_ratios: dict[str, Sequence[float]], main: str | None = None):
    """Forget-set truth ratios (P_false / P_true, log scale) of every model on one axis.

    A model that knows the forget answers sits far left (true answer much likelier than false ones); the oracle, which
    never saw them, sits near 1; forget quality is the KS test between the unlearned model's and the oracle's.
    """
    data = {name: _finite(v) for name, v in truth_ratios.items()}
    data = {name: a[a > 0] for name, a in data.items() if (a > 0).any()}
    if not data:
        return None
    allv = np.concatenate(list(data.values()))
    lo, hi = math.log10(allv.min()), math.log10(allv.max())
    if hi - lo < 0.5:
        lo, hi = lo - 0.25, hi + 0.25
    bins = np.logspace(lo, hi, 31)
    colors = model_colors(data, main)
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    for name, a in data.items():
        c = colors[name]
        ax.hist(a, bins=bins, histtype="stepfilled", color=c, alpha=0.18)
        ax.hist(a, bins=bins, histtype="step", color=c, linewidth=1.8,
                label=f"{name} (n={len(a)}, median {np.median(a):.3g})")
    ax.axvline(1.0, color="#555", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # room for the legend above the bars
    ax.set_xlabel("forget truth ratio  P(false answers) / P(true answer)   (log scale)", fontsize=9)
    ax.set_ylabel("forget items", fontsize=9)
    ax.set_title("Forget-set truth ratios: left of 1 = the model still prefers the true answer", fontsize=10)
    _style(ax)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    return fig


def _plain_log_ticks(axis) -> None:
    """Log-axis tick labels as plain numbers (0.01, 0.1, 1, 10) rather than powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _loss_key(key: str) -> bool:
    return "loss" in key or "nll" in key


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) < 2 * window:
        return y
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window // 2, y[0]), y, np.full(window - 1 - window // 2, y[-1])])
    return np.convolve(padded, kernel, mode="valid")


def training_series(records: Sequence[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{key: (steps, values)}`` for every numeric key of metrics.jsonl other than bookkeeping: losses first (total,
    forget, retain, others), then method state (dual variables, ...)."""
    keys: list[str] = []
    for r in records:
        for k, v in r.items():
            if k not in _BOOKKEEPING and k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys.append(k)

    def rank(k):
        if k == "loss":
            return (0, 0)
        if _loss_key(k):
            return (1, 0 if k.startswith("forget") else 1 if k.startswith("retain") else 2)
        return (2, 0)

    keys.sort(key=rank)  # stable: the file's order within a group
    out = {}
    for k in keys:
        pts = [(r.get("step", i + 1), r[k]) for i, r in enumerate(records)
               if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
        if pts:
            s, v = zip(*pts)
            out[k] = (np.asarray(s, float), np.asarray(v, float))
    return out


def training_curves(records: Sequence[dict], max_panels: int = 8):
    """One small panel per logged quantity against the optimizer step: the losses, then any method state.

    Panels keep their own y scale, since a forget loss driven up by gradient ascent and a retain loss near zero do not
    fit on one axis. Long runs show the raw values faintly and a moving average on top.
    """
    series = training_series(records)
    if not series:
        return None
    names = list(series)[:max_panels]
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig = _figure(10.5, 2.3 * rows + 0.35)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    for i, ax in enumerate(axes.flat):
        if i >= len(names):
            ax.set_visible(False)
            continue
        name = names[i]
        steps, values = series[name]
        loss = _loss_key(name)
        color = (COLORS["target"] if name.startswith("forget") else COLORS["oracle"] if name.startswith("retain")
                 else "#333333" if loss else "#8e44ad")
        window = max(1, len(values) // 25)
        if window > 1:
            ax.plot(steps, values, color=color, alpha=0.3, linewidth=0.8)
            ax.plot(steps, _smooth(values, window), color=color, linewidth=1.6)
        else:
            ax.plot(steps, values, color=color, linewidth=1.6, marker="o" if len(values) <= 12 else None, markersize=3)
        ax.set_title(name if loss else f"{name}  (method state)", fontsize=9)
        _style(ax)
        if i // cols == rows - 1 or i + cols >= len(names):
            ax.set_xlabel("optimizer step", fontsize=8)
            ax.tick_params(labelbottom=True)
    fig.suptitle("Training log (metrics.jsonl)", fontsize=10)
    return fig


def roc_points(members: Sequence[float], nonmembers: Sequence[float]) -> tuple[np.ndarray, np.ndarray, float]:
    """ROC of a membership test that flags an item as a member when its Min-K% score is low.

    Scores are signed 'higher = less likely a member' (as in ``scoring.metrics.mia_auc``), so the threshold sweeps from
    the lowest score up. Returns (false-positive rates, true-positive rates, AUC); the AUC equals ``mia_auc``.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    labels = [1] * len(members) + [0] * len(nonmembers)
    scores = -np.asarray(list(members) + list(nonmembers), dtype=float)
    fpr, tpr, _ = roc_curve(labels, scores)
    return fpr, tpr, float(roc_auc_score(labels, scores))


def mia_roc(distributions: dict[str, dict], main: str | None = None):
    """Membership-inference ROC curves, one per model: forget items (members for the target) against holdout items
    (never trained on), scored by Min-K% probability. The diagonal is a model that leaks nothing (the oracle)."""
    curves = {}
    for name, d in distributions.items():
        f, h = _finite(d.get("forget_mink") or []), _finite(d.get("holdout_mink") or [])
        if len(f) and len(h):
            curves[name] = roc_points(f, h)
    if not curves:
        return None
    colors = model_colors(curves, main)
    fig = _figure(4.3, 4.5)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#999", linestyle=":", linewidth=1, label="chance (AUC 0.5)")
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, color=colors[name], linewidth=1.8, drawstyle="steps-post", label=f"{name}  AUC {auc:.3f}")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false-positive rate (holdout items flagged)", fontsize=9)
    ax.set_ylabel("true-positive rate (forget items flagged)", fontsize=9)
    ax.set_title("Membership inference (Min-K%): forget vs holdout", fontsize=10)
    _style(ax)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return fig


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For each (x, y) point, whether it is on the Pareto front with both coordinates maximised: no other point is at
    least as good on both axes and better on one. Points with a missing or non-finite coordinate are never on the
    front."""
    ok = [p[0] is not None and p[1] is not None and math.isfinite(p[0]) and math.isfinite(p[1]) for p in points]
    out = []
    for i, (x, y) in enumerate(points):
        if not ok[i]:
            out.append(False)
            continue
        dominated = any(ok[j] and points[j][0] >= x and points[j][1] >= y and (points[j][0] > x or points[j][1] > y)
                        for j in range(len(points)) if j != i)
        out.append(not dominated)
    return out


def _num(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def tradeoff_plane(rows: Sequence[dict], reference: Iterable[str] = ("target", "oracle")):
    """Forget quality (log scale) against model utility, one point per method, the Pareto front (both maximised) drawn
    as a step line through its points. Rows whose ``method`` is in ``reference`` (the target, the oracle) are drawn as
    reference markers and kept off the front. A forget quality of 0 (a p-value that underflowed) is drawn at the left
    edge with a '<' marker."""
    reference = set(reference)
    pts = []
    for r in rows:
        fq, mu = _num(r.get("forget_quality")), _num(r.get("model_utility"))
        if fq is None or mu is None:
            continue
        pts.append((str(r.get("method", "?")), max(fq, 0.0), mu, str(r.get("method")) in reference
                    or bool(r.get("reference"))))
    if not pts:
        return None
    positive = [p[1] for p in pts if p[1] > 0]
    floor = (min(positive) if positive else 1e-10) / 100
    pts = [(n, fq if fq > 0 else floor, mu, ref) for n, fq, mu, ref in pts]
    methods = [p for p in pts if not p[3]]
    front = pareto_front([(p[1], p[2]) for p in methods])
    fig = _figure(6.6, 4.3)
    ax = fig.add_subplot()
    for (name, fq, mu, _), on in zip(methods, front):
        ax.scatter([fq], [mu], s=46 if on else 30, color=COLORS["unlearned"] if on else "#9aa5b1", zorder=3,
                   edgecolor="black" if on else "none", linewidth=0.6, marker="<" if fq == floor else "o")
        ax.annotate(name + (" (0)" if fq == floor else ""), (fq, mu), xytext=(5, 4), textcoords="offset points",
                    fontsize=7.5, color="#111" if on else "#666")
    for name, fq, mu, _ in (p for p in pts if p[3]):
        c = COLORS.get(name, "#333")
        ax.scatter([fq], [mu], marker="*", s=110, color=c, zorder=4, edgecolor="black", linewidth=0.5)
        ax.annotate(name, (fq, mu), xytext=(6, -10), textcoords="offset points", fontsize=8, color=c,
                    fontweight="bold")
    fr = sorted((p[1], p[2]) for p, on in zip(methods, front) if on)
    if fr:
        xs, ys = zip(*fr)
        ax.plot(xs, ys, color=COLORS["unlearned"], linewidth=1.2, linestyle="--", drawstyle="steps-pre", zorder=2,
                label="Pareto front (no method better on both axes)")
        ax.legend(fontsize=8, frameon=False, loc="best")
    ax.set_xscale("log")
    ax.set_xlim(floor / 5, max(1.0, max(p[1] for p in pts)) * 3)
    ax.set_xlabel("forget quality (KS p-value vs oracle, log scale; higher = closer to the oracle)", fontsize=9)
    ax.set_ylabel("model utility (higher = more kept)", fontsize=9)
    ax.set_title("Forgetting vs keeping: one point per method", fontsize=10)
    _style(ax)
    return fig
