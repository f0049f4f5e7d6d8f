"""``obliviate worstcase`` and ``obliviate path-dependence``: the command flows of the two system-level audits.

* ``worstcase_experiment``: from the benchmark's target (fine-tuned here, cached, unless given), for each method, the
  hardest and easiest forget sets of ``size`` items among the forget split (``audit.worstcase``), and their gap to the
  oracle beside random sets of the same size. Writes ``out/worstcase.json`` and ``out/worstcase.md``.
* ``path_dependence_experiment``: stages made from the benchmark (its forget split, and the retain split cut by entity
  into ``retain_stages`` stages of at most ``stage_size`` items), a fresh tiny model (or a given model folder)
  fine-tuned along each order, the same unlearning applied (``audit.path_dependence``). Writes
  ``out/path_dependence.json`` and ``out/path_dependence.md``.

Methods get the tiny model's bench presets (``recipes.bench.TINY_PRESETS``) unless ``presets=False``.
"""

from __future__ import annotations

from pathlib import Path

from ..audit.path_dependence import PathConfig
from ..audit.worstcase import WorstCaseConfig
from ..data.benchmark import Benchmark
from ..data.records import QAItem
from ..errors import ConfigError, DataError
from ..io import write_json, write_text
from .bench import TINY_PRESETS


def _methods(names: list[str], presets: bool):
    from ..methods import make_method
    from ..methods.base import method_key

    table = {method_key(k): v for k, v in TINY_PRESETS.items()} if presets else {}
    out = []
    for name in names:
        hp = {k: v for k, v in table.get(method_key(name), {}).items() if not k.startswith("train.")}
        out.append(make_method(name, **hp))
    if not out:
        raise ConfigError("no method given (--methods)")
    return out


def _f(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def worstcase_markdown(results: list[dict]) -> str:
    lines = ["# Worst-case forget sets", "",
             "Gap to the oracle on each chosen set after unlearning it: mean answer probability of the unlearned model "
             "minus the oracle's (higher = more left to forget).", "",
             "| method | worst | easiest | random (mean) | random sets | worst - random |",
             "|---|---:|---:|---:|---|---:|"]
    for r in results:
        sets = r["sets"]
        rand = [sets[k]["prob_gap"] for k in sets if k.startswith("random")]
        lines.append(f"| {r['method']} | {_f(sets['worst']['prob_gap'])} | {_f(sets['easiest']['prob_gap'])} | "
                     f"{_f(r['random_mean_prob_gap'])} | {', '.join(_f(x) for x in rand)} | "
                     f"{_f(r['worst_minus_random'])} |")
    return "\n".join(lines) + "\n"


def worstcase_experiment(bench: Benchmark, methods: list[str], cfg: WorstCaseConfig, out_dir: str | Path,
                         models: dict[str, Path] | None = None, presets: bool = True, log=print) -> list[dict]:
    """Worst-case, easiest and random forget sets for every method; ``models`` = {"target", "oracle"} folders (default:
    the tiny model fine-tuned on the benchmark, cached)."""
    from ..audit.worstcase import compare_sets
    from ..engine.run_folder import run_folder
    from ..models import load_model
    from ..pipeline import finetune

    ms = _methods(methods, presets)
    cfg.validate(len(bench.forget))
    out = Path(out_dir)
    with run_folder(out, {"--data": bench.root}):
        models = models or finetune(bench, "tiny", log=log, progress=False)
        target, tok = load_model(models["target"], dtype="fp32")
        oracle, _ = load_model(models["oracle"], dtype="fp32")
        results = []
        for m in ms:
            results.append(compare_sets(target, oracle, tok, m, bench.forget, bench.retain, cfg, log=log))
            write_json(out / "worstcase.json", {"benchmark": str(bench.root), "forget_split": bench.forget_split,
                                                "models": {k: str(v) for k, v in models.items()}, "results": results})
        write_text(out / "worstcase.md", worstcase_markdown(results))
    return results


def make_stages(bench: Benchmark, retain_stages: int = 2, stage_size: int = 50) -> dict[str, list[QAItem]]:
    """``forget`` (the forget split) and ``retain1..K``: retain entities dealt round-robin into K stages, each cut to
    ``stage_size`` items (0 = no cap)."""
    if retain_stages < 1:
        raise ConfigError(f"path-dependence: option 'retain_stages' = {retain_stages} must be >= 1")
    entities = list(dict.fromkeys(it.entity or "" for it in bench.retain))
    if len(entities) < retain_stages:
        raise DataError(f"{bench.root}: the retain split has {len(entities)} entities, fewer than the "
                        f"{retain_stages} retain stages asked for")
    stage_of = {e: i % retain_stages for i, e in enumerate(entities)}
    stages: dict[str, list[QAItem]] = {"forget": list(bench.forget)}
    for k in range(retain_stages):
        items = [it for it in bench.retain if stage_of[it.entity or ""] == k]
        stages[f"retain{k + 1}"] = items[:stage_size] if stage_size else items
    return stages


def path_dependence_markdown(result: dict) -> str:
    lines = ["# Path dependence of local unlearning", "",
             "Orders: " + "; ".join(" -> ".join(o) for o in result["orders"]), ""]
    for name, r in result["methods"].items():
        lines += [f"## {name}", "", "| order | " + " | ".join(f"LL_f @{s}" for s in r["steps"]) + " | utility @0 | "
                  f"utility @{r['steps'][-1]} |", "|---|" + "---:|" * (len(r["steps"]) + 2)]
        for p in r["paths"]:
            lines.append(f"| {' -> '.join(p['order'])} | " + " | ".join(_f(x) for x in p["forget_ll"]) +
                         f" | {_f(p['utility'][0])} | {_f(p['utility'][-1])} |")
        sf, su = r["spread_forget_ll"], r["spread_utility"]
        lines += ["| spread (max - min) | " + " | ".join(_f(x) for x in sf["range"]) +
                  f" | {_f(su['range'][0])} | {_f(su['range'][-1])} |",
                  "| spread of the drop LL_f(0) - LL_f | " +
                  " | ".join(_f(x) for x in r["spread_forget_drop"]["range"]) + " | | |", ""]
    return "\n".join(lines)


def path_dependence_experiment(bench: Benchmark, methods: list[str], cfg: PathConfig, out_dir: str | Path,
                               base: str | Path = "tiny", retain_stages: int = 2, stage_size: int = 50,
                               presets: bool = True, tiny=None, log=print) -> dict:
    """Stages from the benchmark, ``base`` fine-tuned along each order, every method's unlearning from each."""
    from ..audit.path_dependence import path_dependence
    from ..engine.run_folder import run_folder
    from ..models import TinyConfig, load_model, tiny_from_texts
    from ..pipeline import benchmark_texts

    ms = _methods(methods, presets)
    cfg.validate()
    stages = make_stages(bench, retain_stages, stage_size)
    out = Path(out_dir)
    with run_folder(out, {"--data": bench.root}):
        if str(base) == "tiny":
            import torch

            tiny = tiny or TinyConfig()
            torch.manual_seed(tiny.seed)
            net, tok = tiny_from_texts(benchmark_texts(bench), tiny)
        else:
            net, tok = load_model(base, dtype="fp32")
        result = path_dependence(net, tok, stages, ms, cfg, log=log)
        result.update({"benchmark": str(bench.root), "forget_split": bench.forget_split, "base": str(base)})
        write_json(out / "path_dependence.json", result)
        write_text(out / "path_dependence.md", path_dependence_markdown(result))
    return result
