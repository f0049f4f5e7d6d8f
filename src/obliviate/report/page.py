"""The page every report is drawn on: one self-contained HTML file, and the helpers its sections share.

Everything the page needs is inside the file: the plots are base64 PNGs drawn by ``plots.py``, the CSS and the few lines
of script (click a column header to sort, a clamped cell to expand it) are inline, and nothing is fetched from the
network. ``esc`` HTML-escapes every string that comes from data or configuration (questions, generations, model names,
certificate reasons); ``fmt`` writes a value as the tables show it. A plot that cannot be drawn becomes a note on the
page; it never stops the page.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import struct
from typing import Callable

# what "better" means for a metric (report.summary.DIRECTIONS), as a table shows it
ARROWS = {"higher": "\u2191 higher", "lower": "\u2193 lower", "closer to oracle": "\u25ce closer to oracle",
          "closer to 0": "\u25ce closer to 0"}


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


def num(v) -> float | None:
    """A finite int or float as a float; anything else (None, bool, nan, text) is None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def sort_value(v) -> str:
    """A cell's ``data-v`` for the sort script: the number's repr, or empty when it is not one."""
    n = num(v)
    return repr(n) if n is not None else ""


# ----------------------------------------------------------------------------------------------------------- plots


def _png_size(data: bytes) -> tuple[int, int]:
    return struct.unpack(">II", data[16:24])


def figure_html(make: Callable, caption: str, alt: str, wide: bool = False) -> str:
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


# -------------------------------------------------------------------------------------------------------- the page


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


def document(title: str, body: str) -> str:
    """The whole HTML file: ``body`` inside the shell that carries the CSS, the script and the no-network policy."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<meta name=\"generator\" content=\"obliviate\">\n"
            # no network: the page may only use what it carries (data: images, inline style and script)
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n"
            f"<script>{SORT_JS}</script>\n</body>\n</html>\n")


# ----------------------------------------------------------------------------------------------------------- cells


_GOOD = {"pass", "passed", "certified", "ok", "forgotten", "success", "yes", "true"}
_BAD = {"fail", "failed", "rejected", "not certified", "no", "false", "leak", "leaks"}


def heat_style(value: float | None, rgb: tuple[int, int, int]) -> str:
    """An inline background whose strength follows a value in [0, 1] (probability, ROUGE)."""
    if value is None:
        return ""
    a = max(0.0, min(1.0, value)) * 0.45
    return f' style="background: rgba({rgb[0]},{rgb[1]},{rgb[2]},{a:.2f})"'


def verdict_class(verdict) -> str:
    """The badge colour of a verdict: ``good``, ``bad`` or ``warn`` (anything not recognised)."""
    v = str(verdict).strip().lower()
    if v in _GOOD:
        return "good"
    if v in _BAD or v.startswith("fail") or v.startswith("not"):
        return "bad"
    return "warn"


def sortable_th(label: str, sort: str, desc: str | None = None) -> str:
    """A sortable header cell: its label, the sort mark, and an optional second line."""
    return (f'<th data-sort="{sort}"{" class=n" if sort == "num" else ""}>{esc(label)}<span class="sm"></span>'
            f'{f"<span class=desc>{esc(desc)}</span>" if desc else ""}</th>')


def now() -> str:
    """The time a page says it was generated (UTC, to the second)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
