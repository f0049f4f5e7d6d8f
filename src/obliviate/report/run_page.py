"""``report.html`` of one run: the page a person reads on a laptop, or prints, to judge an unlearning run.

The page is a view of files already in the run directory: ``report.json`` (the contract), ``metrics.jsonl`` (the
training log) and, when present, ``certificate.json``. ``write_run_report(run_dir)`` regenerates it from them at any
time (``obliviate report RUN_DIR``). Its sections, top to bottom: the headline cards, the metric summary table, the
plots, the certificate, the forget set item by item (before and after), and the run's details. The page shell, the
escaping and the number format are ``page.py``'s.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

from ..io import write_text
from .page import (ARROWS, document, esc, figure_html, fmt, heat_style, now, num, sort_value, sortable_th,
                   verdict_class)
from .summary import DIRECTIONS, load_report
from .training_log import read_metrics

# one line per metric, shown under its name in the summary table
DESCRIPTIONS: dict[str, str] = {
    "forget_quality": "KS-test p-value: forget truth ratios vs the oracle's",
    "model_utility": "harmonic mean of retain / real-author / world-fact scores",
    "forget_Q_A_Prob": "probability of the forget answers",
    "forget_Q_A_ROUGE": "ROUGE-L recall of greedy answers to forget questions",
    "forget_truth_ratio": "mean min(TR, 1/TR) on the forget set",
    "forget_truth_ratio_prob_mean": "mean P_true / (P_true + P_false) on the forget set",
    "privleak": "membership-inference AUC relative to the oracle's, in %",
    "mia_min_k": "Min-K% membership-inference AUC, forget vs holdout",
    "extraction_strength": "share of the answer needed before the rest is reproduced",
    "exact_memorization": "share of answer tokens predicted exactly",
    "retain_Q_A_Prob": "probability of the retain answers",
    "retain_Q_A_ROUGE": "ROUGE-L recall on retain questions",
    "retain_truth_ratio": "mean max(0, 1 - TR) on the retain set",
    "ra_Q_A_Prob_normalised": "real authors: P(true) / P(true or false answers)",
    "wf_Q_A_Prob_normalised": "world facts: P(true) / P(true or false answers)",
}
HEADLINE = ["forget_quality", "model_utility", "privleak", "forget_Q_A_Prob"]
MAX_ITEMS = 1000  # drill-down rows shown; the rest are counted
_PLAIN_PROMPT = re.compile(r"^Question: (.*)\nAnswer:\s*$", re.S)


def _roles(report: dict) -> tuple[str, str | None, str | None, list[str]]:
    """(main, oracle, target, every model in column order: target, main, others, oracle)."""
    main = report.get("model", "model")
    compare = list(report.get("compare", {}))
    oracle = report.get("oracle") or ("oracle" if "oracle" in compare else None)
    if oracle not in compare:
        oracle = None
    target = "target" if "target" in compare else None
    others = [n for n in compare if n not in (oracle, target)]
    order = [n for n in (target, main, *others, oracle) if n]
    return main, oracle, target, order


def _best(direction: str, values: dict[str, float | None], oracle_value: float | None) -> set[str]:
    vals = {k: v for k, v in values.items() if v is not None}
    if not vals:
        return set()
    if direction == "higher":
        score = {k: v for k, v in vals.items()}
    elif direction == "lower":
        score = {k: -v for k, v in vals.items()}
    elif direction == "closer to 0":
        score = {k: -abs(v) for k, v in vals.items()}
    elif direction == "closer to oracle" and oracle_value is not None:
        score = {k: -abs(v - oracle_value) for k, v in vals.items()}
    else:
        return set()
    top = max(score.values())
    return {k for k, s in score.items() if s == top} if len(vals) > 1 else set()


def _swatch(name: str, colors: dict[str, str]) -> str:
    c = colors.get(name)
    return f'<span class="swatch" style="background:{c}"></span>' if c else ""


def _summary_table(report: dict, colors: dict[str, str]) -> str:
    main, oracle, _, order = _roles(report)
    columns = {main: report.get("metrics", {}), **report.get("compare", {})}
    directions = report.get("directions") or DIRECTIONS
    keys = [k for k in directions if any(k in columns[n] for n in order)]
    role = {main: "<span class=desc>audited</span>"}
    if oracle:
        role[oracle] = "<span class=desc>reference</span>"
    head = "".join(
        f'<th class="n{" main" if n == main else " ref" if n == oracle else ""}">{_swatch(n, colors)}{esc(n)}'
        f'{role.get(n, "")}</th>' for n in order)
    rows = []
    for k in keys:
        d = directions.get(k, "")
        ref_v = num(columns[oracle].get(k)) if oracle else None
        best = _best(d, {n: num(columns[n].get(k)) for n in order if n != oracle}, ref_v)
        cells = "".join(
            f'<td class="n{" main" if n == main else " ref" if n == oracle else ""}{" best" if n in best else ""}" '
            f'data-v="{esc(sort_value(columns[n].get(k)))}">{esc(fmt(columns[n].get(k)))}</td>' for n in order)
        desc = DESCRIPTIONS.get(k)
        rows.append(f'<tr><th scope="row">{esc(k)}{f"<span class=desc>{esc(desc)}</span>" if desc else ""}</th>{cells}'
                    f'<td class="dir">{esc(ARROWS.get(d, d))}</td></tr>')
    return (f'<div class="scroll"><table class="summary" id="summary-table"><thead><tr><th>metric</th>{head}'
            f'<th>better</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def _other_metrics_table(report: dict) -> str:
    main, _, _, order = _roles(report)
    columns = {main: report.get("metrics", {}), **report.get("compare", {})}
    shown = set(report.get("directions") or DIRECTIONS)
    keys = sorted({k for n in order for k in columns[n]} - shown)
    if not keys:
        return ""
    head = "".join(f'<th class="n">{esc(n)}</th>' for n in order)
    rows = "".join(f'<tr><th scope="row">{esc(k)}</th>'
                   + "".join(f'<td class="n">{esc(fmt(columns[n].get(k)))}</td>' for n in order) + "</tr>"
                   for k in keys)
    return (f'<h3>Every other metric</h3><div class="scroll"><table class="other"><thead><tr><th>metric</th>{head}'
            f'</tr></thead><tbody>{rows}</tbody></table></div>')


def _cards(report: dict, colors: dict[str, str]) -> str:
    main, oracle, target, _ = _roles(report)
    m, compare = report.get("metrics", {}), report.get("compare", {})
    directions = report.get("directions") or DIRECTIONS
    out = []
    for k in HEADLINE:
        if k not in m:
            continue
        refs = [f"{esc(n)} {esc(fmt(compare[n].get(k)))}" for n in (target, oracle) if n and k in compare.get(n, {})]
        out.append(f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{esc(fmt(m[k]))}</div>'
                   f'<div class="r">{esc(ARROWS.get(directions.get(k, ""), directions.get(k, "")))}'
                   f'{" &middot; " + " &middot; ".join(refs) if refs else ""}</div></div>')
    return f'<div class="cards">{"".join(out)}</div>' if out else ""


def _question(prompt: str) -> str:
    m = _PLAIN_PROMPT.match(prompt or "")
    return m.group(1) if m else (prompt or "")



def _items_table(report: dict, colors: dict[str, str]) -> str:
    main, _, target, _ = _roles(report)
    rows = (report.get("per_item") or {}).get("forget") or []
    if not rows:
        return '<p class="note">report.json has no per-item rows for the forget split.</p>'
    before_rows = ((report.get("compare_per_item") or {}).get(target) or {}).get("forget") or [] if target else []
    before = {r.get("index", i): r for i, r in enumerate(before_rows)}
    have_before = bool(before)
    have_gen = any("generation" in r for r in rows)
    have_flu = any("fluency_nonword_share" in r for r in rows)   # audit.fluency.annotate_rows
    ordered = sorted(rows, key=lambda r: -(num(r.get("prob")) or 0.0))
    shown, hidden = ordered[:MAX_ITEMS], max(0, len(ordered) - MAX_ITEMS)
    red = (192, 57, 43)

    def num_td(v, heat=None, cls="n"):
        n = num(v)
        return (f'<td class="{cls}" data-v="{esc(sort_value(v))}"{heat_style(n, heat) if heat else ""}>'
                f'{esc(fmt(v))}</td>')

    head = [sortable_th("#", "num"), sortable_th("question", "text"), sortable_th("answer", "text", "the target text")]
    if have_before:
        head.append(sortable_th("p before", "num", target))
    head.append(sortable_th("p after", "num", main))
    if have_gen:
        if have_before:
            head.append(sortable_th("generation before", "text", target))
        head += [sortable_th("generation after", "text", main), sortable_th("ROUGE after", "num", "ROUGE-L")]
    if have_flu:
        head += [sortable_th("non-words", "num", "share of the generation's tokens that are not words"),
                 sortable_th("ref ppl", "num", "the reference model's perplexity of the generation"),
                 sortable_th("entropy", "num", "RWKU's bi/tri-gram fluency entropy (low: repetitive)")]
    if have_before:
        head.append(sortable_th("TR before", "num", "truth ratio"))
    head.append(sortable_th("TR after", "num", "P(false)/P(true)"))
    body = []
    for r in shown:
        i = r.get("index")
        b = before.get(i, {})
        cells = [f'<td class="n" data-v="{esc(sort_value(i))}">{esc(i)}</td>',
                 f'<td class="q">{esc(_question(r.get("prompt", "")))}</td>',
                 f'<td class="ans">{esc((r.get("target") or "").strip())}</td>']
        if have_before:
            cells.append(num_td(b.get("prob"), red))
        cells.append(num_td(r.get("prob"), red))
        if have_gen:
            if have_before:
                cells.append(_gen_td(b.get("generation"), num(b.get("rougeL_recall"))))
            cells.append(_gen_td(r.get("generation"), num(r.get("rougeL_recall"))))
            cells.append(num_td(r.get("rougeL_recall"), red))
        if have_flu:
            cells += [num_td(r.get("fluency_nonword_share"), red), num_td(r.get("fluency_ref_ppl")),
                      num_td(r.get("fluency_ngram_entropy"))]
        if have_before:
            cells.append(num_td(b.get("truth_ratio")))
        cells.append(num_td(r.get("truth_ratio")))
        body.append(f"<tr>{''.join(cells)}</tr>")
    note = f'<p class="note">{hidden} more items not shown (the {MAX_ITEMS} most probable are).</p>' if hidden else ""
    missing = ("" if have_before or not target else
               '<p class="note">The target\'s per-item rows are not in this report.json (written before '
               '<code>compare_per_item</code> existed); only the audited model is shown.</p>')
    return (f'{missing}<div class="scroll"><table class="items sortable" id="items-table"><thead><tr>{"".join(head)}'
            f'</tr></thead><tbody>{"".join(body)}</tbody></table></div>{note}')


def _gen_td(text, rouge: float | None) -> str:
    """A generation cell: clamped to a few lines (click to expand), its left edge as red as its ROUGE recall."""
    text = (text or "").strip()
    edge = f"rgba(192,57,43,{0.15 + 0.85 * max(0.0, min(1.0, rouge)):.2f})" if rouge is not None else "transparent"
    return (f'<td class="gen" style="border-left: 4px solid {edge}" data-v="{esc(text)}">'
            f'<div class="clamp" title="click to expand or collapse">{esc(text)}</div></td>')


def _certificate_html(cert: dict) -> str:
    verdict = cert.get("verdict", "?")
    checks = [c for c in cert.get("checks") or [] if isinstance(c, dict)]
    rows = []
    for c in checks:
        passed = c.get("passed")
        mark = ('<span class="pass">\u2713 pass</span>' if passed is True else
                '<span class="fail">\u2717 fail</span>' if passed is False else esc(fmt(passed)))
        rows.append(f'<tr><th scope="row">{esc(c.get("name"))}</th><td class="n">{esc(fmt(c.get("value")))}</td>'
                    f'<td class="n">{esc(fmt(c.get("threshold")))}</td><td>{mark}</td>'
                    f'<td>{esc(c.get("reason", ""))}</td></tr>')
    n_pass = sum(1 for c in checks if c.get("passed") is True)
    table = (f'<div class="scroll"><table class="certificate" id="certificate-table"><thead><tr><th>check</th>'
             f'<th class="n">value</th><th class="n">threshold</th><th>result</th><th>reason</th></tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table></div>') if rows else ""
    return (f'<p>Verdict: <span class="badge {verdict_class(verdict)}" id="certificate-verdict">{esc(verdict)}</span> '
            f'&nbsp;{n_pass} of {len(checks)} checks passed.</p>{table}')


def _config_line(config: dict) -> str:
    parts = []
    for key in ("command", "method", "forget_split", "data", "model"):
        if config.get(key) not in (None, "", []):
            parts.append(f"{esc(key)} <code>{esc(fmt(config[key]))}</code>")
    hp = config.get("hp") or config.get("hparams")
    if hp:
        parts.append(f"hyperparameters <code>{esc(fmt(hp))}</code>")
    return " &middot; ".join(parts)


def _protocol_html(report: dict) -> str:
    """The audit's protocol and prompt format, with the prompt a question became (report.json's ``prompt_format``)."""
    pf = report.get("prompt_format") or {}
    if not pf and "protocol" not in report:
        return ""
    rows = [("protocol", report.get("protocol", "obliviate")), ("prompt format", pf.get("name", "?")),
            ("chat template used", pf.get("chat_template_used")), ("system prompt", pf.get("system_prompt") or "none"),
            ("date string", pf.get("date_string"))]
    cells = "".join(f"<tr><td>{esc(k)}</td><td><code>{esc(fmt(v))}</code></td></tr>" for k, v in rows)
    example = pf.get("example_prompt")
    return ("<h3>Protocol and prompt format</h3>"
            f'<table class="mini"><tbody>{cells}</tbody></table>'
            + (f"<p>Each question became this prompt:</p><pre>{esc(example)}</pre>" if example else ""))


def render_run_report(report: dict, records: Sequence[dict] | None = None, certificate: dict | None = None,
                      title: str | None = None) -> str:
    """The HTML page of one run from report.json's contents, the metrics.jsonl records and an optional certificate."""
    from .plots import model_colors, mia_roc, training_curves, truth_ratio_histogram

    main, oracle, target, order = _roles(report)
    colors = model_colors(order, main)
    dists = report.get("distributions") or {}
    config = report.get("config") or {}
    method = config.get("method")
    title = title or (f"obliviate report: {method} \u2192 {main}" if isinstance(method, str)
                      else f"obliviate report: {main}")

    tr = {n: (dists.get(n) or {}).get("forget_truth_ratio") for n in order}
    tr = {n: v for n, v in tr.items() if v}
    plot_tr = figure_html(lambda: truth_ratio_histogram(tr, main),
                          "Forget quality is the KS-test p-value between the audited model's histogram and the "
                          "oracle's: the closer the two shapes, the higher it is.",
                          "forget truth-ratio histogram")
    plot_roc = figure_html(lambda: mia_roc({n: dists[n] for n in order if n in dists}, main),
                           "An attacker flags items with a low Min-K% score as training members. A curve on the "
                           "diagonal leaks nothing; privleak compares the audited model's AUC with the oracle's.",
                           "membership-inference ROC curves")
    plot_train = figure_html(lambda: training_curves(records or []),
                             "Every quantity the method logged per optimizer step (metrics.jsonl); long runs show a "
                             "moving average over the faint raw values.",
                             "training curves", wide=True) if records else ""
    plots_html = "".join(p for p in (plot_tr, plot_roc, plot_train) if p)

    nav = ['<a href="#summary">summary</a>', '<a href="#plots">plots</a>']
    if certificate:
        nav.append('<a href="#certificate">certificate</a>')
    nav += ['<a href="#items">forget items</a>', '<a href="#details">run details</a>']
    verdict = (f' &nbsp;<span class="badge {verdict_class(certificate.get("verdict"))}">certificate: '
               f'{esc(certificate.get("verdict", "?"))}</span>') if certificate else ""
    created = report.get("created", "")
    legend = " ".join(f"{_swatch(n, colors)}{esc(n)}{' (reference)' if n == oracle else ''}" for n in order)
    body = [
        f'<header class="top"><h1>{esc(title)}{verdict}</h1>',
        f'<p class="sub">{_config_line(config)}</p>' if _config_line(config) else "",
        f'<p class="sub">models: {legend} &middot; created {esc(created)} &middot; config '
        f'<code>{esc(report.get("config_hash", ""))}</code></p>',
        f'<nav class="noprint">{"".join(nav)}</nav></header>',
        _cards(report, colors),
        '<h2 id="summary">Metric summary</h2>',
        '<p class="lead">Each metric for every audited model; '
        + ("the oracle (retrained without the forget set) is the reference a perfect unlearning would match. "
           if oracle else "")
        + "Bold marks the better of the non-reference models under the metric's direction of "
          "&ldquo;better&rdquo;.</p>",
        _summary_table(report, colors),
        '<h2 id="plots">Plots</h2>',
        f'<div class="plots">{plots_html}</div>' if plots_html else '<p class="note">No plots: nothing to draw.</p>',
    ]
    if certificate:
        body += ['<h2 id="certificate">Certificate</h2>', _certificate_html(certificate)]
    body += [
        '<h2 id="items">Forget set, item by item</h2>',
        f'<p class="lead">Every forget question with its answer, what the {esc(target or "original")} model and the '
        f'{esc(main)} model say (greedy decoding) and how probable each finds the answer. Sorted by the probability '
        'after unlearning, highest first: the top rows are what is still remembered. Red = probability or '
        'ROUGE recall of the answer (TR: truth ratio). Click a generation to expand it, a header to sort.</p>',
        _items_table(report, colors),
        '<h2 id="details">Run details</h2>',
        _other_metrics_table(report),
        _protocol_html(report),
        f'<h3>Audit cost ({esc(main)})</h3><pre>{esc(json.dumps(report.get("cost", {}), indent=1, default=str))}</pre>',
        f'<h3>Configuration</h3><pre>{esc(json.dumps(config, indent=1, ensure_ascii=False, default=str))}</pre>',
        f'<h3>Versions</h3><pre>{esc(json.dumps(report.get("versions", {}), indent=1, default=str))}</pre>',
        f'<footer>Generated by obliviate from report.json{" and metrics.jsonl" if records else ""}'
        f'{" and certificate.json" if certificate else ""} on {esc(now())}. Regenerate with '
        '<code>obliviate report RUN_DIR</code>.</footer>',
    ]
    return document(title, "\n".join(b for b in body if b))


def write_run_report(run_dir: str | Path, report: dict | None = None) -> Path:
    """Write ``run_dir/report.html`` from the run directory's report.json, metrics.jsonl and certificate.json."""
    run_dir = Path(run_dir)
    report = report if report is not None else load_report(run_dir / "report.json")
    records = read_metrics(run_dir / "metrics.jsonl")
    certificate = None
    cert_path = run_dir / "certificate.json"
    if cert_path.exists():
        try:
            certificate = json.loads(cert_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            certificate = None
        if not isinstance(certificate, dict) or not isinstance(certificate.get("checks", []), list):
            certificate = {"verdict": "unreadable certificate.json", "checks": []}
    path = run_dir / "report.html"
    write_text(path, render_run_report(report, records, certificate))
    return path
