"""The full TOFU audit of one model, timed and measured (peak RSS) against a baseline commit, checked for equal
numbers, and profiled stage by stage.

    python benchmarks/audit_speed.py                          # 7326d71 vs HEAD, same work, interleaved, ratios
    python benchmarks/audit_speed.py --repeats 2 --split forget05
    python benchmarks/audit_speed.py --profile                # where HEAD's audit spends its time and memory
    python benchmarks/audit_speed.py --profile --cprofile     # ... and its top functions (cProfile; slower)

What runs: ``obliviate audit --model TINY --data TOFU --forget-split SPLIT`` (the command a user types: model and data
loading, the teacher-forced pass and greedy generations of every split, every metric, report.json and report.html) in a
fresh interpreter per (commit, repeat), one thread each, base and HEAD alternating. The model is the tiny Llama the
issue timed (``TinyConfig()``, tokenizer trained on TOFU forget10's texts, random weights, saved once): it never emits
EOS, so every generation runs to ``--max-new-tokens``, the audit's worst case. Each run gets its own copy of the model
folder and an empty ``OBLIVIATE_CACHE`` (HEAD caches audits beside the model).

Same work on both sides: 7326d71 generated 64 new tokens within max_length 256 by default, HEAD 200 within 512
(issue 15); both commits take ``--max-new-tokens`` and ``--max-length``, so both are run at ``--new-tokens`` /
``--max-length`` (default HEAD's own defaults, 200 / 512). Wall time is measured around the child process; peak RSS
is the child's ``ru_maxrss`` from ``os.wait4``. Every numeric value of report.json's ``metrics`` and of the per-item
rows both commits write is compared between the two sides (max |difference|).

The baseline is a git worktree of the commit: ``git worktree add /tmp/base7326 7326d71``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TOFU = Path(os.environ.get("OBLIVIATE_SHARED_DATA", REPO.parent / "shared" / "data")) / "tofu"
GIB = 1024 ** 3


def _load() -> str:
    return open("/proc/loadavg").read().split()[0] + " (1-min load)" if Path("/proc/loadavg").exists() else "?"


def tiny_model_dir(where: Path) -> Path:
    """The tiny Llama of issue 19 (``TinyConfig()``, tokenizer trained on TOFU forget10's texts), saved once."""
    sys.path.insert(0, str(REPO / "src"))
    from obliviate.data import load_benchmark
    from obliviate.models import TinyConfig, save_model, tiny_from_texts
    from obliviate.pipeline import benchmark_texts

    model, tok = tiny_from_texts(benchmark_texts(load_benchmark(TOFU, "forget10")), TinyConfig())
    return save_model(model, tok, where / "tiny")


def audit_argv(model_dir: Path, out: Path, args) -> list[str]:
    return ["audit", "--model", str(model_dir), "--data", str(TOFU), "--forget-split", args.split, "--out", str(out),
            "--max-new-tokens", str(args.new_tokens), "--max-length", str(args.max_length), "--quiet"]


def run_audit(src: Path, model_dir: Path, work: Path, args) -> dict:
    """One audit in a fresh interpreter importing ``src``'s obliviate: wall seconds, peak RSS, report.json."""
    work.mkdir(parents=True)
    model = work / "model"
    shutil.copytree(model_dir, model, ignore=shutil.ignore_patterns("audits"))
    env = {**os.environ, "PYTHONPATH": str(src / "src"), "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads), "OBLIVIATE_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false", "OBLIVIATE_CACHE": str(work / "cache")}
    cmd = [sys.executable, "-m", "obliviate", *audit_argv(model, work / "out", args)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=str(work), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{src}: audit failed (exit {proc.returncode}):\n{output[-3000:]}")
    report = json.loads((work / "out" / "report.json").read_text())
    shutil.rmtree(model)
    return {"wall_s": wall, "rss_gib": usage.ru_maxrss * 1024 / GIB, "report": report}


def _numbers(x, prefix: str = "") -> dict[str, float]:
    """Every int/float leaf of a JSON value, keyed by its path."""
    if isinstance(x, dict):
        return {k: v for key, val in x.items() for k, v in _numbers(val, f"{prefix}{key}.").items()}
    if isinstance(x, list):
        return {k: v for i, val in enumerate(x) for k, v in _numbers(val, f"{prefix}{i}.").items()}
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return {prefix.rstrip("."): float(x)}
    return {}


def compare_reports(a: dict, b: dict) -> dict:
    """Max |difference| over the numbers both reports hold in ``metrics`` and in the per-item rows, and the generated
    texts that differ."""
    out = {}
    for part in ("metrics", "per_item"):
        na, nb = _numbers(a.get(part, {})), _numbers(b.get(part, {}))
        common = sorted(set(na) & set(nb))
        diffs = [(abs(na[k] - nb[k]) if na[k] == na[k] or nb[k] == nb[k] else 0.0, k) for k in common]
        nan_mismatch = [k for k in common if (na[k] != na[k]) != (nb[k] != nb[k])]
        worst = max(diffs) if diffs else (0.0, "-")
        out[part] = {"compared": len(common), "max_abs_diff": worst[0], "where": worst[1],
                     "only_base": len(set(na) - set(nb)), "only_head": len(set(nb) - set(na)), "nan_mismatch":
                     nan_mismatch}
    gens_a = [r.get("generation") for rows in a.get("per_item", {}).values() for r in rows]
    gens_b = [r.get("generation") for rows in b.get("per_item", {}).values() for r in rows]
    out["generations_differing"] = sum(x != y for x, y in zip(gens_a, gens_b))
    out["generations"] = sum(x is not None for x in gens_b)
    return out


def compare(args) -> None:
    base = Path(args.base)
    if not (base / "src" / "obliviate").is_dir():
        sys.exit(f"{base}: no baseline checkout (git worktree add {base} 7326d71)")
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="audit_speed.") as d:
        model_dir = tiny_model_dir(Path(d))
        runs: dict[str, list[dict]] = {"base": [], "head": []}
        for r in range(args.repeats):
            for side, src in (("base", base), ("head", REPO)) if r % 2 == 0 else (("head", REPO), ("base", base)):
                res = run_audit(src, model_dir, Path(d) / f"{side}{r}", args)
                runs[side].append(res)
                print(f"repeat {r + 1} {side:4}: {res['wall_s']:7.1f} s, peak RSS {res['rss_gib']:.2f} GiB "
                      f"(load {_load()})", flush=True)
    t = {s: [x["wall_s"] for x in v] for s, v in runs.items()}
    m = {s: [x["rss_gib"] for x in v] for s, v in runs.items()}
    eq = compare_reports(runs["base"][0]["report"], runs["head"][0]["report"])
    print(f"\nFull TOFU audit ({args.split}: forget, retain, holdout, real authors, world facts) of the tiny Llama, "
          f"greedy generation of {args.new_tokens} new tokens, max_length {args.max_length}, {args.threads} "
          f"thread(s), {args.repeats} run(s) per side interleaved; load before {load_before}, after {_load()}")
    print(f"{'':22}{'min time':>10}{'median':>10}{'peak RSS (max)':>16}")
    for side, name in (("base", f"7326d71 ({base})"), ("head", "HEAD")):
        print(f"{name[:21]:22}{min(t[side]):>9.1f}s{statistics.median(t[side]):>9.1f}s{max(m[side]):>12.2f} GiB")
    print(f"speed-up time(7326d71) / time(HEAD): x{min(t['base']) / min(t['head']):.2f} at the minimum, "
          f"x{statistics.median(t['base']) / statistics.median(t['head']):.2f} at the median "
          f"(target >= 2); HEAD peak RSS {max(m['head']):.2f} GiB (target <= 1), "
          f"7326d71 / HEAD memory x{max(m['base']) / max(m['head']):.2f}")
    for part in ("metrics", "per_item"):
        e = eq[part]
        print(f"equal numbers, report.json {part}: max |base - HEAD| = {e['max_abs_diff']:.3g} over {e['compared']} "
              f"values (at {e['where']}); NaN on one side only: {len(e['nan_mismatch'])}; "
              f"values only in 7326d71: {e['only_base']}, only in HEAD: {e['only_head']} (fields added since)")
    print(f"generated answers differing: {eq['generations_differing']} of {eq['generations']}")
    ok = eq["metrics"]["max_abs_diff"] <= 1e-6 and eq["per_item"]["max_abs_diff"] <= 1e-6
    print("numbers " + ("EQUAL to 1e-6" if ok else "DIFFERENT (over 1e-6)"))


# --------------------------------------------------------------------------------------------------------- profile


class Stages:
    """Wall time and peak RSS per audit stage: functions wrapped so that each call's time goes to its stage (a call
    inside another stage's call is taken out of the outer one), and a thread sampling /proc/self/statm every 10 ms that
    charges each sample to the innermost running stage."""

    def __init__(self):
        import threading

        self.time: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.top: tuple[int, str, float] = (0, "", 0.0)  # the process's highest RSS, the stage it was seen in, when
        self.stack: list[list] = []  # [stage, start, time of nested stages]
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            stage = self.stack[-1][0] if self.stack else "outside the audit stages"
            rss = self._rss()
            self.peak[stage] = max(self.peak.get(stage, 0), rss)
            if rss > self.top[0]:
                self.top = (rss, stage, time.perf_counter())

    def wrap(self, owner, name: str, stage: str) -> None:
        fn = getattr(owner, name)

        def timed(*a, **kw):
            self.stack.append([stage, time.perf_counter(), 0.0])
            try:
                return fn(*a, **kw)
            finally:
                st, start, nested = self.stack.pop()
                spent = time.perf_counter() - start
                self.time[st] = self.time.get(st, 0.0) + spent - nested
                self.calls[st] = self.calls.get(st, 0) + 1
                if self.stack:
                    self.stack[-1][2] += spent

        setattr(owner, name, timed)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()


def profile(args) -> None:
    """HEAD's audit in this process, stage by stage (``Stages``), optionally with cProfile's top functions."""
    import cProfile
    import pstats

    sys.path.insert(0, str(REPO / "src"))
    os.environ.update({"OMP_NUM_THREADS": str(args.threads), "OBLIVIATE_THREADS": str(args.threads),
                       "TOKENIZERS_PARALLELISM": "false"})
    import torch

    torch.set_num_threads(args.threads)
    from obliviate import cli, pipeline
    from obliviate.audit import fluency, open_unlearning, suite
    from obliviate.data import collate
    from obliviate.report import run_page
    from obliviate.scoring import metrics, passes

    st = Stages()
    st.wrap(pipeline, "load_data", "load TOFU files")
    st.wrap(collate.PromptFormat, "encode", "tokenise (prompt, answer) pairs")
    st.wrap(passes, "forward_logits", "teacher-forced forward (logits)")
    st.wrap(passes, "score_sequences", "per-token scores from logits")
    st.wrap(suite, "generate_answers", "greedy generation")
    st.wrap(metrics, "rouge_l_recall", "ROUGE-L")
    for name in ("nonword_share", "badchar_share", "ngram_entropy"):
        st.wrap(fluency, name, "fluency of forget answers")
    st.wrap(suite, "_split_metrics", "other metrics from scores")
    st.wrap(open_unlearning, "write_eval_logs", "TOFU_EVAL.json (open-unlearning's logs, ROUGE again)")
    st.wrap(run_page, "write_run_report", "report.html")
    with tempfile.TemporaryDirectory(prefix="audit_profile.") as d:
        os.environ["OBLIVIATE_CACHE"] = str(Path(d) / "cache")
        model_dir = tiny_model_dir(Path(d))
        prof = cProfile.Profile() if args.cprofile else None
        t0 = time.perf_counter()
        prof.enable() if prof else None
        cli.main(audit_argv(model_dir, Path(d) / "out", args))
        prof.disable() if prof else None
        total = time.perf_counter() - t0
    st.stop()
    rest = total - sum(st.time.values())
    print(f"\nHEAD's audit profiled ({args.split}, {args.new_tokens} new tokens, max_length {args.max_length}, "
          f"{args.threads} thread(s), load {_load()}): total {total:.1f} s")
    print("| stage | calls | time (s) | share | peak RSS in stage (GiB) |\n|---|---:|---:|---:|---:|")
    for stage, secs in sorted(st.time.items(), key=lambda kv: -kv[1]):
        print(f"| {stage} | {st.calls[stage]} | {secs:.1f} | {secs / total:.0%} | {st.peak.get(stage, 0) / GIB:.2f} |")
    print(f"| everything else (imports, model load, report) | - | {rest:.1f} | {rest / total:.0%} | "
          f"{st.peak.get('outside the audit stages', 0) / GIB:.2f} |")
    print(f"highest RSS {st.top[0] / GIB:.2f} GiB, first seen {st.top[2] - t0:.0f} s in, during: {st.top[1]} (RSS "
          f"seldom falls back: freed memory stays with the allocator, so a stage's peak includes what came before)")
    if prof:
        print("\ncProfile, top functions by own time:")
        pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--split", default="forget10", help="TOFU forget split (default forget10)")
    p.add_argument("--repeats", type=int, default=1, help="runs per side, interleaved (default 1)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--new-tokens", type=int, default=200, help="greedy generation length (default 200, HEAD's)")
    p.add_argument("--max-length", type=int, default=512, help="longest prompt + answer (default 512, HEAD's)")
    p.add_argument("--base", default="/tmp/base7326", help="worktree of the baseline commit (default /tmp/base7326)")
    p.add_argument("--profile", action="store_true", help="profile HEAD's audit instead of comparing")
    p.add_argument("--cprofile", action="store_true", help="with --profile: also cProfile (slower), its top functions")
    p.add_argument("--top", type=int, default=25, help="with --cprofile: rows shown (default 25)")
    args = p.parse_args()
    profile(args) if args.profile else compare(args)


if __name__ == "__main__":
    main()
