"""``obliviate calibrate``: k oracles retrained from different seeds, the certificate's checks between them.

1. the benchmark (the synthetic one by default) at the chosen forget split;
2. the target (seed 0) and k oracles, seeds 0..k-1 (the training seed, and for the tiny model also its initialisation
   seed), each through ``pipeline.finetune`` and so cached: a rerun, or a run with more seeds, retrains nothing it has;
3. ``audit.calibrate.calibrate``: the battery for every ordered oracle pair and for the target against each oracle;
4. ``OUT/calibration.json`` and ``OUT/calibration.md`` (the table), which ``obliviate audit --certify --calibration
   OUT/calibration.json`` reads for its thresholds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..audit.calibrate import calibrate, calibration_markdown
from ..audit.certify import load_certify_config
from ..engine.run_folder import check_run_folder, run_folder
from ..errors import ConfigError
from ..io import write_json, write_text
from ..models import TinyConfig, load_model
from ..pipeline import finetune, load_data, train_config

CALIBRATE_OUT = "runs/calibrate"


def run_calibration(out_dir: str | Path = CALIBRATE_OUT, seeds: int = 5, forget_split: str = "forget10",
                    data: str | Path | None = None, model: str = "tiny", finetune_cfg=None,
                    tiny: TinyConfig | None = None, certify_config: str | Path | None = None, with_target: bool = True,
                    progress: bool = False, log=print) -> dict:
    """Train (or reuse) the target and ``seeds`` oracles, calibrate the certificate's checks, write the files; returns
    the calibration. ``finetune_cfg``: a TrainConfig or options on top of the model's fine-tuning preset."""
    if seeds < 2:
        raise ConfigError(f"calibrate: --seeds {seeds}: needs at least 2 oracles to compare")
    ccfg = load_certify_config(certify_config)
    bench = load_data(data, forget_split)
    inputs = {"--data": bench.root}
    check_run_folder(out_dir, inputs)
    base = train_config("finetune", model, finetune_cfg)
    tiny = tiny or TinyConfig()
    paths = {}
    for seed in range(seeds):
        cfg = dataclasses.replace(base, seed=base.seed + seed)
        which = ("target", "oracle") if seed == 0 and with_target else ("oracle",)
        got = finetune(bench, model, cfg=cfg, tiny=dataclasses.replace(tiny, seed=tiny.seed + seed), which=which,
                       progress=progress, log=log)
        paths[f"seed{seed}"] = got["oracle"]
        if "target" in got:
            paths["target"] = got["target"]
    loaded = {label: load_model(p, dtype="auto") for label, p in paths.items()}
    target = loaded.pop("target", None)
    cal = calibrate(loaded, bench, ccfg, target=target, log=log)
    cal["models"] = {label: str(p) for label, p in paths.items()}
    cal["finetune"] = dataclasses.asdict(base)
    with run_folder(out_dir, inputs):
        write_json(Path(out_dir) / "calibration.json", cal)
        write_text(Path(out_dir) / "calibration.md", calibration_markdown(cal))
    return cal
