"""report.html: built from a real tiny-model run (unlearn -> audit -> audit_report), opened in headless Chromium.

The browser checks need Debian's ``chromium`` (``apt-get install -y chromium``) and skip, saying so, without it. The
screenshot is kept under ``tests/artifacts/`` (git-ignored), or under ``$OBLIVIATE_TEST_ARTIFACTS`` when set.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from obliviate.config import AuditConfig, TrainConfig
from obliviate.pipeline import audit, audit_report, unlearn

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
ARTIFACTS = Path(os.environ.get("OBLIVIATE_TEST_ARTIFACTS") or Path(__file__).parent / "artifacts")


def _artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if "OBLIVIATE_TEST_ARTIFACTS" not in os.environ and not (ARTIFACTS / ".gitignore").exists():
        (ARTIFACTS / ".gitignore").write_text("*\n")
    return ARTIFACTS


@pytest.fixture(scope="module")
def run(trained_models, small_bench, tmp_path_factory):
    """A real run directory: NPO for a few steps, the three audits, report.json + report.html from audit_report."""
    out = tmp_path_factory.mktemp("report_run")
    cfg = TrainConfig(lr=2e-3, max_steps=8, batch_size=4, scheduler="constant")
    model = unlearn(trained_models["target"], small_bench, "NPO", {"alpha": 2.0}, cfg, out, progress=False,
                    log=lambda *a: None)
    acfg = AuditConfig(max_new_tokens=32)  # the settings of test_pipeline: the target's and oracle's audits are shared
    results = {name: audit(trained_models[name], small_bench, acfg, progress=False, log=lambda *a: None)
               for name in ("target", "oracle")}
    results["unlearned"] = audit(model, small_bench, acfg, progress=False, log=lambda *a: None)
    lines: list[str] = []
    report = audit_report(results, "oracle", "unlearned", {"command": "test", "note": HOSTILE}, out, log=lines.append)
    return out, report, results, lines


def _pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def _colours(png: bytes) -> int:
    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    return len(im.getcolors(maxcolors=1 << 20) or [])


# ------------------------------------------------------------------------------------------- the page, no browser


def test_audit_report_writes_the_page_beside_report_json(run):
    out, report, _, lines = run
    page = (out / "report.html").read_text(encoding="utf-8")
    assert json.loads((out / "report.json").read_text())["compare_per_item"]["target"]["forget"]
    assert report["oracle"] == "oracle"
    assert any("report.html" in ln for ln in lines)
    # self-contained: no URL the browser would fetch, every image inline
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:|//|file:)', page, re.I)
    assert "url(" not in page and "@import" not in page
    pngs = _pngs(page)
    assert len(pngs) == 3 and all(_colours(p) > 10 for p in pngs)  # histogram, ROC, training curves
    # user strings are escaped: the hostile config value is shown as text, never as markup
    assert HOSTILE not in page and "&lt;script&gt;window.__pwned" in page
    # the drill-down shows each forget item's question, answer and both models' generations
    first = report["per_item"]["forget"][0]
    target_gen = report["compare_per_item"]["target"]["forget"][0]["generation"].strip()
    for text in (first["target"].strip(), first["generation"].strip(), target_gen):
        assert _esc(text) in page


def _esc(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_report_command_regenerates_the_page_and_shows_the_certificate(run):
    from obliviate.cli import main

    out, _, _, _ = run
    cert = {"verdict": "fail", "checks": [
        {"name": "forget_quality", "value": 0.2, "threshold": 0.05, "passed": True, "reason": "KS p-value above 0.05"},
        {"name": "privleak", "value": -80.0, "threshold": 10.0, "passed": False, "reason": HOSTILE}]}
    (out / "certificate.json").write_text(json.dumps(cert))
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="certificate-verdict">fail<' in page and "1 of 2 checks passed" in page
    assert HOSTILE not in page


def test_a_failing_plot_costs_only_that_plot(run, monkeypatch, tmp_path):
    from obliviate.report import plots, run_page, training_log

    src, report, results, _ = run
    out = tmp_path / "run"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("model", "checkpoints", "*.safetensors"))

    def broken(*a, **k):
        raise ValueError("no plot today")

    monkeypatch.setattr(plots, "truth_ratio_histogram", broken)
    page = run_page.render_run_report(report, training_log.read_metrics(out / "metrics.jsonl"))
    assert "could not be drawn (ValueError: no plot today)" in page and len(_pngs(page)) == 2
    assert 'id="summary-table"' in page
    # and a page that cannot be written at all leaves report.json in place
    monkeypatch.setattr(run_page, "write_run_report", broken)
    (out / "report.json").unlink()
    lines: list[str] = []
    audit_report(results, "oracle", "unlearned", {"command": "test"}, out, log=lines.append)
    assert (out / "report.json").exists() and any("report.html not written" in ln for ln in lines)


def test_roc_matches_the_audit_auc_and_a_hand_count(run):
    from obliviate.report.plots import roc_points

    _, report, _, _ = run
    for name, d in report["distributions"].items():
        members, others = d["forget_mink"], d["holdout_mink"]
        fpr, tpr, auc = roc_points(members, others)
        # AUC by counting pairs: the probability a member scores lower (more member-like) than a non-member
        pairs = [(m < o) + 0.5 * (m == o) for m in members for o in others]
        assert auc == pytest.approx(sum(pairs) / len(pairs))
        metrics = report["metrics"] if name == report["model"] else report["compare"][name]
        assert auc == pytest.approx(metrics["mia_min_k"])
        assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and np.all(np.diff(fpr) >= 0)


def test_pareto_front_by_hand():
    from obliviate.report.plots import pareto_front

    pts = [(1e-5, 0.9), (1e-2, 0.8), (1e-2, 0.7), (0.5, 0.3), (1e-3, 0.85), (1e-6, 0.9), (float("nan"), 1.0)]
    # (1e-2, 0.7) is beaten by (1e-2, 0.8); (1e-6, 0.9) by (1e-5, 0.9); nan is never on the front
    assert pareto_front(pts) == [True, True, False, True, True, False, False]
    assert pareto_front([(0.1, 0.5), (0.1, 0.5)]) == [True, True]  # equal points do not dominate each other


BENCH_ROWS = [
    {"method": "target", "forget_quality": 2e-9, "model_utility": 0.73, "privleak": -100.0},
    {"method": "oracle", "forget_quality": 1.0, "model_utility": 0.79, "privleak": 0.0},
    {"method": "GradAscent", "forget_quality": 0.0, "model_utility": 0.02, "privleak": 60.0, "seconds": 12.5},
    {"method": "NPO", "forget_quality": 0.37, "model_utility": 0.63, "privleak": 87.8, "seconds": 30.1},
    {"method": "SimNPO", "forget_quality": 0.05, "model_utility": 0.70, "privleak": 20.0, "seconds": 28.0},
    {"method": "RMU", "forget_quality": 0.01, "model_utility": 0.60, "privleak": 5.0, "seconds": 40.0},
    {"method": HOSTILE, "forget_quality": None, "model_utility": 0.5},
]


def test_bench_page_marks_the_pareto_front(tmp_path):
    from obliviate.report import render_bench_report

    page = render_bench_report(tmp_path, BENCH_ROWS).read_text(encoding="utf-8")
    assert len(_pngs(page)) == 1 and _colours(_pngs(page)[0]) > 10
    rows = {re.search(r'<th scope="row" data-v="([^"]*)"', r).group(1): r for r in page.split("<tr")[1:]
            if '<th scope="row"' in r}
    front = {m: rows[m].rstrip().endswith('data-v="1">\u2713</td></tr>')
             for m in ("NPO", "SimNPO", "RMU", "GradAscent")}
    assert front == {"NPO": True, "SimNPO": True, "RMU": False, "GradAscent": False}
    assert HOSTILE not in page and "seconds" in page


# ---------------------------------------------------------------------------------------------- in a real browser


_HEAD_PROBE = """<script>window.__errors = [];
window.addEventListener('error', function (e) {
  __errors.push(String(e.message || (e.target && (e.target.src || e.target.href)) || e.type));
}, true);
document.addEventListener('securitypolicyviolation', function (e) {
  __errors.push('blocked: ' + e.blockedURI + ' (' + e.violatedDirective + ')');
});
</script>"""
_BODY_PROBE = """<pre id="__probe"></pre><script>window.addEventListener('load', function () {
  var images = Array.prototype.map.call(document.images, function (im) {
    var c = document.createElement('canvas'), colours = 0;
    c.width = im.naturalWidth; c.height = im.naturalHeight;
    try {
      var g = c.getContext('2d'); g.drawImage(im, 0, 0);
      var d = g.getImageData(0, 0, c.width, c.height).data, seen = new Set();
      for (var i = 0; i < d.length && seen.size < 1000; i += 4) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
      colours = seen.size;
    } catch (err) { __errors.push('canvas: ' + err); }
    var r = im.getBoundingClientRect();
    return {alt: im.alt, complete: im.complete, naturalWidth: im.naturalWidth, shownWidth: r.width, colours: colours};
  });
  var rows = function (id) { var t = document.getElementById(id); return t ? t.tBodies[0].rows.length : 0; };
  var summary = document.getElementById('summary-table');
  document.getElementById('__probe').textContent = JSON.stringify({
    errors: __errors, images: images, pwned: window.__pwned || 0,
    resources: performance.getEntriesByType('resource').map(function (r) { return r.name; }),
    summaryRows: rows('summary-table'), itemRows: rows('items-table'), benchRows: rows('bench-table'),
    summaryHead: summary ? summary.tHead.textContent : '',
    overflowX: document.documentElement.scrollWidth > window.innerWidth
  });
});</script>"""


def _chromium(args: list[str], tmp: Path, timeout: int = 90) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={tmp / 'profile'}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=timeout)


def _probe(page: Path, tmp: Path) -> dict:
    """Open a copy of the page with a probe script and read back what the browser saw."""
    text = page.read_text(encoding="utf-8")
    probed = tmp / f"probe-{page.parent.name}.html"
    probed.write_text(text.replace("<head>", "<head>" + _HEAD_PROBE, 1).replace("</body>", _BODY_PROBE + "</body>", 1),
                      encoding="utf-8")
    res = _chromium(["--window-size=1366,900", "--virtual-time-budget=5000", "--dump-dom", probed.as_uri()], tmp)
    m = re.search(r'<pre id="__probe">(.*?)</pre>', res.stdout, re.S)
    assert m and m.group(1), f"the probe did not run (exit {res.returncode}): {res.stderr[-2000:]}"
    import html

    return json.loads(html.unescape(m.group(1)))


def _check_images(seen: dict, n: int) -> None:
    assert seen["errors"] == [] and seen["resources"] == [] and seen["pwned"] == 0, seen
    assert len(seen["images"]) == n, seen["images"]
    for im in seen["images"]:
        assert im["complete"] and im["naturalWidth"] > 0 and im["shownWidth"] > 100, im
        assert im["colours"] > 10, f"{im['alt']} looks blank: {im['colours']} colours"


@needs_chromium
def test_run_page_in_chromium(run, tmp_path):
    from PIL import Image

    out, report, _, _ = run
    page = out / "report.html"
    seen = _probe(page, tmp_path)
    _check_images(seen, 3)  # forget truth ratios, membership ROC, training curves
    assert seen["summaryRows"] >= 10 and seen["itemRows"] == len(report["per_item"]["forget"])
    for name in ("target", "unlearned", "oracle", "better"):
        assert name in seen["summaryHead"]
    assert not seen["overflowX"], "the page is wider than a laptop screen"

    shot = _artifacts() / "report.png"
    shot.unlink(missing_ok=True)
    res = _chromium(["--window-size=1366,2400", f"--screenshot={shot}", page.as_uri()], tmp_path)
    assert shot.exists(), res.stderr[-2000:]
    im = Image.open(shot).convert("RGB")
    assert im.size == (1366, 2400)
    assert len(im.getcolors(maxcolors=1 << 20) or []) > 100  # text, tables and plots, not a blank page

    pdf = tmp_path / "report.pdf"
    res = _chromium(["--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri()], tmp_path)
    data = pdf.read_bytes() if pdf.exists() else b""
    assert data.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", data)) >= 2, res.stderr[-2000:]


@needs_chromium
def test_bench_page_in_chromium(tmp_path):
    from obliviate.report import render_bench_report

    page = render_bench_report(tmp_path / "bench", BENCH_ROWS)
    seen = _probe(page, tmp_path)
    _check_images(seen, 1)
    assert seen["benchRows"] == len(BENCH_ROWS)
