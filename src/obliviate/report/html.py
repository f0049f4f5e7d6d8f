"""``report.html``: one self-contained page per run (and per bench) that a person reads on a laptop or prints.

Everything the page needs is inside the file: the plots are base64 PNGs drawn by ``plots.py``, the CSS and the few lines
of script (click a column header to sort) are inline, and nothing is fetched from the network. Every string that comes
from data or configuration (questions, generations, model names, certificate reasons) is HTML-escaped.

The page is a view of files already in the run directory: ``report.json`` (the contract), ``metrics.jsonl`` (the
training log) and, when present, ``certificate.json``. ``write_run_report(run_dir)`` regenerates it from them at any
time (``obliviate report RUN_DIR``). A plot that cannot be drawn becomes a note on the page; it never stops the page.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import re
import struct
from pathlib import Path
from typing import Callable, Sequence

from ..io import write_text
from .summary import DIRECTIONS

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
ARROWS = {"higher": "\u2191 higher", "lower": "\u2193 lower", "closer to oracle": "\u25ce closer to oracle",
          "closer to 0": "\u25ce closer to 0"}
HEADLINE = ["forget_quality", "model_utility", "privleak", "forget_Q_A_Prob"]
MAX_ITEMS = 1000  # drill-down rows shown; the rest are counted
_PLAIN_PROMPT = re.compile(r"^Question: (.*)\nAnswer:\s*$", re.S)
_GOOD = {"pass", "passed", "certified", "ok", "forgotten", "success", "yes", "true"}
_BAD = {"fail", "failed", "rejected", "not certified", "no", "false", "leak", "leaks"}


def esc(value) -> str:
    """HTML-escape anything (quotes too, so the result is safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt(v) -> str:
    """A number as the tables show it: 3 decimals, or scientific notation for very small or large magnitudes."""
    if v is None:
        return "\u2013"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        v = float(v)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "\u221e" if v > 0 else "-\u221e"
        if v == 0:
            return "0"
        if abs(v) < 1e-3 or abs(v) >= 1e5:
            return f"{v:.2e}"
        if v == int(v) and abs(v) >= 1:
            return f"{int(v)}"
        return f"{v:.1f}" if abs(v) >= 99.9995 else f"{v:.3f}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False, default=str)
    return str(v)


def _num(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _sort_value(v) -> str:
    n = _num(v)
    return repr(n) if n is not None else ""


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl; a missing file is no records, an unreadable line (a run killed mid-write) is
    skipped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


# ----------------------------------------------------------------------------------------------------------- plots


def _png_size(data: bytes) -> tuple[int, int]:
    return struct.unpack(">II", data[16:24])


def _figure_html(make: Callable, caption: str, alt: str, wide: bool = False) -> str:
    """Draw one plot into an <img>; a failure (matplotlib missing, bad data) becomes a note instead of an image."""
    try:
        from . import plots

        fig = make()
        if fig is None:
            return ""
        data = plots.png(fig)
    except ImportError as e:
        return (f'<figure class="plot missing"><p class="note">{esc(alt)}: needs matplotlib, '
                f'<code>pip install "obliviate[plots]"</code> ({esc(e)})</p></figure>')
    except Exception as e:  # a plot must never cost the rest of the page
        return (f'<figure class="plot missing"><p class="note">{esc(alt)}: could not be drawn '
                f'({esc(type(e).__name__)}: {esc(e)})</p></figure>')
    w, h = _png_size(data)
    scale = 96 / 144  # the plots are drawn at 144 dpi: show them at CSS size, sharp on high-density screens
    b64 = base64.b64encode(data).decode("ascii")
    return (f'<figure class="plot{" wide" if wide else ""}"><img src="data:image/png;base64,{b64}" alt="{esc(alt)}" '
            f'width="{round(w * scale)}" height="{round(h * scale)}"><figcaption>{caption}</figcaption></figure>')


# ---------------------------------------------------------------------------------------------------------- shared


CSS = """
:root { --fg:#1d2329; --muted:#5f6b77; --line:#dfe3e8; --bg:#ffffff; --soft:#f5f7f9; --accent:#2c6fbb;
        --target:#c0392b; --oracle:#27864a; --good:#1e7e34; --bad:#b02a37; --warn:#b7791f; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin:0; color:var(--fg); background:var(--bg); font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
       "Helvetica Neue",Arial,sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 24px 60px; }
header.top { border-bottom: 1px solid var(--line); padding-bottom: 12px; margin-bottom: 8px; }
h1 { font-size: 1.55rem; margin: 0 0 4px; }
h2 { font-size: 1.2rem; margin: 30px 0 8px; padding-top: 6px; border-top: 1px solid var(--line); }
h3 { font-size: 1rem; margin: 18px 0 6px; }
header.top + h2, header.top + .cards + h2 { border-top: none; }
.sub { color: var(--muted); margin: 0; }
.sub code, td code { font-size: .86em; }
nav { display:flex; flex-wrap:wrap; gap: 4px 14px; font-size:.9rem; margin: 8px 0 0; }
nav a { color: var(--accent); text-decoration: none; }
nav a:hover { text-decoration: underline; }
p.lead { margin: 4px 0 10px; color: var(--muted); max-width: 80ch; }
p.note { color: var(--warn); font-size:.9rem; }
.cards { display:grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 10px; margin: 14px 0 4px; }
.card { border:1px solid var(--line); border-radius: 8px; padding: 10px 12px; background: var(--soft); }
.card .k { font-size:.8rem; color: var(--muted); text-transform: uppercase; letter-spacing: .03em; }
.card .v { font-size: 1.5rem; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .r { font-size: .82rem; color: var(--muted); }
.badge { display:inline-block; padding: 1px 9px; border-radius: 999px; font-size: .85rem; font-weight: 600;
         border: 1px solid currentColor; }
.badge.good { color: var(--good); } .badge.bad { color: var(--bad); } .badge.warn { color: var(--warn); }
.scroll { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { padding: 5px 9px; border-bottom: 1px solid var(--line); vertical-align: top; text-align: left; }
thead th { background: var(--soft); font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafbfc; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { font-weight: 700; }
th.main, td.main { background: rgba(44,111,187,.07); }
th.ref, td.ref { color: var(--oracle); }
.desc { display:block; color: var(--muted); font-size: .85em; font-weight: 400; }
.dir { white-space: nowrap; color: var(--muted); }
.swatch { display:inline-block; width:.75em; height:.75em; border-radius:2px; margin-right:5px; vertical-align: -1px; }
th[data-sort] { cursor: pointer; user-select: none; }
th[data-sort] .sm::after { content: " \\2195"; color: #aab; font-weight: 400; }
th[aria-sort=ascending] .sm::after { content: " \\2191"; color: var(--fg); }
th[aria-sort=descending] .sm::after { content: " \\2193"; color: var(--fg); }
.plots { display:grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 14px; align-items: start; }
figure.plot { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 8px; background: #fff; }
figure.plot.wide { grid-column: 1 / -1; }
figure.plot img { display:block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { font-size: .84rem; color: var(--muted); margin-top: 6px; }
table.items { font-size: .84rem; }
table.items th, table.items td { padding: 5px 6px; }
table.items thead th { white-space: normal; vertical-align: bottom; }
table.items td.q { min-width: 8em; max-width: 22em; }
table.items td.gen { min-width: 9em; max-width: 24em; white-space: pre-wrap; word-break: break-word; }
table.items td.ans { min-width: 8em; max-width: 20em; word-break: break-word; }
.clamp { display: -webkit-box; -webkit-box-orient: vertical; -webkit-line-clamp: 4; line-clamp: 4; overflow: hidden;
         cursor: pointer; }
.clamp.open { display: block; -webkit-line-clamp: none; line-clamp: none; }
.heat { border-radius: 3px; padding: 0 4px; }
.pass { color: var(--good); font-weight: 700; } .fail { color: var(--bad); font-weight: 700; }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 10px; overflow-x: auto;
      font-size: .8rem; white-space: pre-wrap; word-break: break-word; }
footer { margin-top: 40px; color: var(--muted); font-size: .8rem; }
@media (max-width: 700px) { main { padding: 12px; } .plots { grid-template-columns: 1fr; } }
@media print {
  @page { size: A4; margin: 12mm; }
  body { font-size: 9.5pt; }
  main { max-width: none; padding: 0; }
  nav, .noprint { display: none !important; }
  h2 { break-after: avoid; }
  .plots { display: block; }
  figure.plot { break-inside: avoid; margin: 0 0 10px; border: none; padding: 0; }
  figure.plot img { max-width: 100%; max-height: 120mm; width: auto; }
  .scroll { overflow: visible; border: none; }
  thead { display: table-header-group; }
  tr, .card { break-inside: avoid; }
  table.items { font-size: 7.5pt; }
  table.items td.q, table.items td.gen, table.items td.ans { max-width: none; min-width: 0; }
  .sm { display: none; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  a { color: inherit; text-decoration: none; }
}
"""

SORT_JS = """
(function () {
  function key(cell, numeric) {
    var v = cell ? cell.getAttribute('data-v') : null;
    if (v === null) v = cell ? cell.textContent : '';
    if (!numeric) return v.toLowerCase();
    var n = parseFloat(v);
    return isNaN(n) ? -Infinity : n;
  }
  Array.prototype.forEach.call(document.querySelectorAll('.clamp'), function (el) {
    el.addEventListener('click', function () { el.classList.toggle('open'); });
  });
  var heads = document.querySelectorAll('table.sortable th[data-sort]');
  Array.prototype.forEach.call(heads, function (th) {
    th.addEventListener('click', function () {
      var row = th.parentNode, table = row.parentNode.parentNode, body = table.tBodies[0];
      var col = Array.prototype.indexOf.call(row.children, th), numeric = th.getAttribute('data-sort') === 'num';
      var asc = th.getAttribute('aria-sort') !== 'ascending';
      Array.prototype.forEach.call(row.children, function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a.cells[col], numeric), y = key(b.cells[col], numeric);
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
})();
"""


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<meta name=\"generator\" content=\"obliviate\">\n"
            # no network: the page may only use what it carries (data: images, inline style and script)
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n"
            f"<script>{SORT_JS}</script>\n</body>\n</html>\n")


def _heat(value: float | None, rgb: tuple[int, int, int]) -> str:
    """An inline background whose strength follows a value in [0, 1] (probability, ROUGE)."""
    if value is None:
        return ""
    a = max(0.0, min(1.0, value)) * 0.45
    return f' style="background: rgba({rgb[0]},{rgb[1]},{rgb[2]},{a:.2f})"'


def _verdict_class(verdict) -> str:
    v = str(verdict).strip().lower()
    if v in _GOOD:
        return "good"
    if v in _BAD or v.startswith("fail") or v.startswith("not"):
        return "bad"
    return "warn"


# ------------------------------------------------------------------------------------------------------ run report


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
        ref_v = _num(columns[oracle].get(k)) if oracle else None
        best = _best(d, {n: _num(columns[n].get(k)) for n in order if n != oracle}, ref_v)
        cells = "".join(
            f'<td class="n{" main" if n == main else " ref" if n == oracle else ""}{" best" if n in best else ""}" '
            f'data-v="{esc(_sort_value(columns[n].get(k)))}">{esc(fmt(columns[n].get(k)))}</td>' for n in order)
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


def _th(label: str, sort: str, desc: str | None = None) -> str:
    """A sortable header cell: its label, the sort mark, and an optional second line."""
    return (f'<th data-sort="{sort}"{" class=n" if sort == "num" else ""}>{esc(label)}<span class="sm"></span>'
            f'{f"<span class=desc>{esc(desc)}</span>" if desc else ""}</th>')


def _items_table(report: dict, colors: dict[str, str]) -> str:
    main, _, target, _ = _roles(report)
    rows = (report.get("per_item") or {}).get("forget") or []
    if not rows:
        return '<p class="note">report.json has no per-item rows for the forget split.</p>'
    before_rows = ((report.get("compare_per_item") or {}).get(target) or {}).get("forget") or [] if target else []
    before = {r.get("index", i): r for i, r in enumerate(before_rows)}
    have_before = bool(before)
    have_gen = any("generation" in r for r in rows)
    ordered = sorted(rows, key=lambda r: -(_num(r.get("prob")) or 0.0))
    shown, hidden = ordered[:MAX_ITEMS], max(0, len(ordered) - MAX_ITEMS)
    red = (192, 57, 43)

    def num_td(v, heat=None, cls="n"):
        n = _num(v)
        return f'<td class="{cls}" data-v="{esc(_sort_value(v))}"{_heat(n, heat) if heat else ""}>{esc(fmt(v))}</td>'

    head = [_th("#", "num"), _th("question", "text"), _th("answer", "text", "the target text")]
    if have_before:
        head.append(_th("p before", "num", target))
    head.append(_th("p after", "num", main))
    if have_gen:
        if have_before:
            head.append(_th("generation before", "text", target))
        head += [_th("generation after", "text", main), _th("ROUGE after", "num", "ROUGE-L")]
    if have_before:
        head.append(_th("TR before", "num", "truth ratio"))
    head.append(_th("TR after", "num", "P(false)/P(true)"))
    body = []
    for r in shown:
        i = r.get("index")
        b = before.get(i, {})
        cells = [f'<td class="n" data-v="{esc(_sort_value(i))}">{esc(i)}</td>',
                 f'<td class="q">{esc(_question(r.get("prompt", "")))}</td>',
                 f'<td class="ans">{esc((r.get("target") or "").strip())}</td>']
        if have_before:
            cells.append(num_td(b.get("prob"), red))
        cells.append(num_td(r.get("prob"), red))
        if have_gen:
            if have_before:
                cells.append(_gen_td(b.get("generation"), _num(b.get("rougeL_recall"))))
            cells.append(_gen_td(r.get("generation"), _num(r.get("rougeL_recall"))))
            cells.append(num_td(r.get("rougeL_recall"), red))
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
    return (f'<p>Verdict: <span class="badge {_verdict_class(verdict)}" id="certificate-verdict">{esc(verdict)}</span> '
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
    plot_tr = _figure_html(lambda: truth_ratio_histogram(tr, main),
                           "Forget quality is the KS-test p-value between the audited model's histogram and the "
                           "oracle's: the closer the two shapes, the higher it is.",
                           "forget truth-ratio histogram")
    plot_roc = _figure_html(lambda: mia_roc({n: dists[n] for n in order if n in dists}, main),
                            "An attacker flags items with a low Min-K% score as training members. A curve on the "
                            "diagonal leaks nothing; privleak compares the audited model's AUC with the oracle's.",
                            "membership-inference ROC curves")
    plot_train = _figure_html(lambda: training_curves(records or []),
                              "Every quantity the method logged per optimizer step (metrics.jsonl); long runs show a "
                              "moving average over the faint raw values.",
                              "training curves", wide=True) if records else ""
    plots_html = "".join(p for p in (plot_tr, plot_roc, plot_train) if p)

    nav = ['<a href="#summary">summary</a>', '<a href="#plots">plots</a>']
    if certificate:
        nav.append('<a href="#certificate">certificate</a>')
    nav += ['<a href="#items">forget items</a>', '<a href="#details">run details</a>']
    verdict = (f' &nbsp;<span class="badge {_verdict_class(certificate.get("verdict"))}">certificate: '
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
        f'<h3>Audit cost ({esc(main)})</h3><pre>{esc(json.dumps(report.get("cost", {}), indent=1, default=str))}</pre>',
        f'<h3>Configuration</h3><pre>{esc(json.dumps(config, indent=1, ensure_ascii=False, default=str))}</pre>',
        f'<h3>Versions</h3><pre>{esc(json.dumps(report.get("versions", {}), indent=1, default=str))}</pre>',
        f'<footer>Generated by obliviate from report.json{" and metrics.jsonl" if records else ""}'
        f'{" and certificate.json" if certificate else ""} on {esc(_now())}. Regenerate with '
        '<code>obliviate report RUN_DIR</code>.</footer>',
    ]
    return _page(title, "\n".join(b for b in body if b))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_run_report(run_dir: str | Path, report: dict | None = None) -> Path:
    """Write ``run_dir/report.html`` from the run directory's report.json, metrics.jsonl and certificate.json."""
    from .summary import load_report

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


# ---------------------------------------------------------------------------------------------------- bench report


_BENCH_FIRST = ["method", "forget_quality", "model_utility", "privleak"]


def render_bench_html(rows: Sequence[dict], title: str = "obliviate bench", reference=("target", "oracle")) -> str:
    """The HTML page of a bench: the forget-quality / model-utility plane with the Pareto front, and one table row per
    method (every key the rows carry; Pareto-optimal methods marked)."""
    from .plots import pareto_front, tradeoff_plane

    rows = [dict(r) for r in rows]
    plot = _figure_html(lambda: tradeoff_plane(rows, reference),
                        "Up and to the right is better. Methods on the dashed front are not beaten on both axes by any "
                        "other; stars mark the target (before unlearning) and the oracle (retrained without the forget "
                        "set).", "forget quality vs model utility", wide=True)
    is_ref = [str(r.get("method")) in set(reference) or bool(r.get("reference")) for r in rows]
    cand = [i for i, ref in enumerate(is_ref) if not ref]
    pts = [(_num(rows[i].get("forget_quality")), _num(rows[i].get("model_utility"))) for i in cand]
    on_front = dict(zip(cand, pareto_front([(x if x is not None else float("nan"), y if y is not None else float("nan"))
                                            for x, y in pts])))
    keys = [k for k in _BENCH_FIRST if any(k in r for r in rows)]
    for r in rows:
        keys += [k for k in r if k not in keys and k != "reference"]
    head = "".join(_th(k, "text" if k == "method" else "num",
                       ARROWS.get(DIRECTIONS[k], DIRECTIONS[k]) if k in DIRECTIONS else None) for k in keys)
    body = []
    for i, r in enumerate(rows):
        cells = []
        for k in keys:
            v = r.get(k)
            if k == "method":
                tag = " <span class=desc>reference</span>" if is_ref[i] else ""
                cells.append(f'<th scope="row" data-v="{esc(v)}">{esc(v)}{tag}</th>')
            elif _num(v) is not None or v is None:
                cells.append(f'<td class="n" data-v="{esc(_sort_value(v))}">{esc(fmt(v))}</td>')
            else:
                cells.append(f'<td data-v="{esc(fmt(v))}">{esc(fmt(v))}</td>')
        front = "\u2713" if on_front.get(i) else ""
        body.append(f'<tr{" class=ref" if is_ref[i] else ""}>{"".join(cells)}'
                    f'<td class="n" data-v="{1 if front else 0}">{front}</td></tr>')
    table = (f'<div class="scroll"><table class="bench sortable" id="bench-table"><thead><tr>{head}'
             f'{_th("Pareto", "num", "on the front")}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')
    parts = [f'<header class="top"><h1>{esc(title)}</h1><p class="sub">{len(cand)} methods'
             f'{f" and {len(rows) - len(cand)} reference models" if len(rows) > len(cand) else ""} &middot; created '
             f'{esc(_now())}</p></header>',
             '<h2 id="plane">Forget quality vs model utility</h2>',
             f'<div class="plots">{plot}</div>' if plot else '<p class="note">No method has both forget_quality and '
                                                                'model_utility: nothing to plot.</p>',
             '<h2 id="methods">Methods</h2><p class="lead">One row per method; click a header to sort.</p>', table,
             '<footer>Generated by obliviate.</footer>']
    return _page(title, "\n".join(parts))


def render_bench_report(bench_dir: str | Path, rows: Sequence[dict], title: str | None = None,
                        reference=("target", "oracle")) -> Path:
    """Write ``bench_dir/report.html`` for a bench: ``rows`` is one dict per method with at least ``method``,
    ``forget_quality`` and ``model_utility`` (any other keys, e.g. ``privleak`` or seconds, become table columns).
    Rows whose method is in ``reference`` (or that carry ``reference: true``) are drawn as reference points and kept
    off the Pareto front. Returns the path written."""
    bench_dir = Path(bench_dir)
    path = bench_dir / "report.html"
    write_text(path, render_bench_html(rows, title or f"obliviate bench: {bench_dir.name}", reference))
    return path
