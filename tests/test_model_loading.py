"""Model loading refuses what it must not run or must not trust, with one line and never a traceback.

Real tiny models are saved to temporary folders and damaged: pickle "bombs" (files that create a marker file when
unpickled) behind an index, config.json or an adapter; weights with no tensors, a missing layer, a wrong shape or more
layers than config.json declares; a tokenizer bigger than the embeddings. A good model must still load bit for bit.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from obliviate.errors import ModelError
from obliviate.models import load as load_module
from obliviate.models import load_model, save_model

ERROR = "obliviate: error:"


class Bomb:
    """Unpickling this opens ``marker`` for writing, which creates it: proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def write_bomb(path: Path, marker: Path) -> Path:
    """A pickle checkpoint in torch's format whose loading (``torch.load(weights_only=False)``) creates ``marker``."""
    torch.save({"model.embed_tokens.weight": Bomb(marker)}, path)
    return path


def test_the_bomb_is_live(tmp_path):
    """The crafted files below are real threats: unpickled, they create their marker."""
    probe = tmp_path / "probe"
    torch.load(write_bomb(tmp_path / "b.bin", probe), weights_only=False)
    assert probe.exists()
    probe2 = tmp_path / "probe2"
    pickle.loads(pickle.dumps(Bomb(probe2)))
    assert probe2.exists()


@pytest.fixture
def good(random_model, tmp_path) -> Path:
    """A real tiny model (tied embeddings) saved the way obliviate saves models."""
    model, tok = random_model
    return save_model(model, tok, tmp_path / "good")


def copy_of(good: Path, name: str) -> Path:
    dst = good.parent / name
    shutil.copytree(good, dst)
    return dst


def refused(folder, *needles, **kwargs) -> str:
    """load_model(folder) raises a one-line ModelError naming the folder and every needle; returns the message."""
    with pytest.raises(ModelError) as e:
        load_model(folder, dtype="fp32", device="cpu", **kwargs)
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert msg.startswith(str(folder)), msg
    for n in needles:
        assert n in msg, msg
    return msg


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


IDS = torch.tensor([[1, 5, 9, 42, 100, 7, 3, 2]])


# --------------------------------------------------------------------------------------------- good models still load

def test_good_model_loads_with_identical_logits(random_model, good, capsys):
    from transformers import AutoModelForCausalLM

    model, tok = random_model
    loaded, tok2 = load_model(good, dtype="fp32", device="cpu")
    assert torch.equal(logits(loaded, IDS), logits(model, IDS))
    plain = AutoModelForCausalLM.from_pretrained(str(good), dtype=torch.float32).eval()  # transformers on its own
    assert torch.equal(logits(loaded, IDS), logits(plain, IDS))
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()  # still tied
    assert len(tok2) == len(tok)
    assert "obliviate: warning" not in capsys.readouterr().err


def test_tokenizer_smaller_than_the_embeddings_is_normal(random_model, tmp_path):
    """Models pad their embedding matrix past the vocabulary (to a multiple of 64, say): that loads."""
    import copy

    model, tok = random_model
    padded = copy.deepcopy(model)
    padded.resize_token_embeddings(len(tok) + 64)
    folder = save_model(padded, tok, tmp_path / "padded")
    loaded, _ = load_model(folder, dtype="fp32", device="cpu")
    assert loaded.get_input_embeddings().num_embeddings == len(tok) + 64
    assert torch.equal(logits(loaded, IDS), logits(padded.eval(), IDS))


def test_allow_pickle_still_loads_a_sharded_pickle_checkpoint(random_model, good):
    """With --allow-pickle an index naming a (trusted) .bin shard loads, and gives the same model."""
    model, _ = random_model
    folder = copy_of(good, "sharded-bin")
    sd = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(sd, folder / "pytorch_model-00001-of-00001.bin")
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: "pytorch_model-00001-of-00001.bin" for k in sd}}))
    refused(folder, "pickle checkpoint", "--allow-pickle")
    loaded, _ = load_model(folder, dtype="fp32", device="cpu", allow_pickle=True)
    assert torch.equal(logits(loaded, IDS), logits(model, IDS))


def test_a_tensor_foreign_to_the_architecture_is_one_warning(random_model, good, capsys):
    """A tensor the architecture has no place for (a value head) is ignored with one warning line; every parameter
    still came from the weights."""
    model, _ = random_model
    folder = copy_of(good, "value-head")
    sd = load_file(str(folder / "model.safetensors"))
    save_file({**sd, "v_head.summary.weight": torch.zeros(1, 64)}, str(folder / "model.safetensors"))
    loaded, _ = load_model(folder, dtype="fp32", device="cpu")
    assert torch.equal(logits(loaded, IDS), logits(model, IDS))
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("obliviate: warning:")]
    expected = f"obliviate: warning: {folder}: ignoring 1 tensor of the weights that the model has no place for " \
               "(v_head.summary.weight)"
    assert warnings == [expected]


# --------------------------------------------------------------------------------------------- never unpickle

def _index_to_bomb(folder: Path, marker: Path, index: str = "model.safetensors.index.json",
                   shard: str = "pytorch_model-00001-of-00001.bin") -> None:
    """Replace the folder's weights by an index naming one .bin shard that is a pickle bomb."""
    keys = list(load_file(str(folder / "model.safetensors")))
    (folder / "model.safetensors").unlink()
    write_bomb(folder / shard, marker)
    (folder / index).write_text(json.dumps({"metadata": {"total_size": 1}, "weight_map": {k: shard for k in keys}}))


def test_safetensors_index_naming_a_pickle_shard_is_refused(good, tmp_path):
    folder = copy_of(good, "index-bomb")
    marker = tmp_path / "pwned"
    _index_to_bomb(folder, marker)
    refused(folder, "pytorch_model-00001-of-00001.bin", "model.safetensors.index.json", "pickle",
            "pass --allow-pickle if you trust the file")
    assert not marker.exists()


def test_pytorch_index_naming_a_pickle_shard_is_refused(good, tmp_path):
    folder = copy_of(good, "bin-index-bomb")
    marker = tmp_path / "pwned"
    _index_to_bomb(folder, marker, index="pytorch_model.bin.index.json")
    refused(folder, "pickle", "pass --allow-pickle if you trust the file")
    assert not marker.exists()


def test_plain_pickle_checkpoint_is_refused(good, tmp_path):
    folder = copy_of(good, "plain-bomb")
    marker = tmp_path / "pwned"
    (folder / "model.safetensors").unlink()
    write_bomb(folder / "pytorch_model.bin", marker)
    refused(folder, "pickle checkpoint (pytorch_model.bin)", "pass --allow-pickle if you trust the file")
    assert not marker.exists()


def test_config_naming_a_pickle_weights_file_is_refused(good, tmp_path):
    """config.json's 'transformers_weights' makes transformers load that file whatever use_safetensors says."""
    folder = copy_of(good, "explicit-bomb")
    marker = tmp_path / "pwned"
    write_bomb(folder / "adapter_model.bin", marker)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "transformers_weights": "adapter_model.bin"}))
    refused(folder, "adapter_model.bin", "transformers_weights", "pickle", "--allow-pickle")
    assert not marker.exists()


def test_adapter_with_pickle_weights_is_refused(good, tmp_path):
    folder = copy_of(good, "adapter-bomb")
    marker = tmp_path / "pwned"
    write_bomb(folder / "adapter_model.bin", marker)
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "base_model_name_or_path": str(good), "r": 2, "lora_alpha": 4,
        "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}))
    refused(folder, "adapter_model.bin", "pickle", "--allow-pickle")
    assert not marker.exists()


def test_torch_load_refuses_while_loading_even_past_the_file_check(good, tmp_path, monkeypatch):
    """The second line of defence (the only one for a hub id): with the folder check switched off, torch.load itself
    refuses during the load, with obliviate's message rather than torch's."""
    folder = copy_of(good, "guarded")
    marker = tmp_path / "pwned"
    _index_to_bomb(folder, marker)
    monkeypatch.setattr(load_module, "_refuse_pickles", lambda path, allow_pickle: None)
    refused(folder, "pytorch_model-00001-of-00001.bin is a pickle checkpoint", "--allow-pickle")
    assert not marker.exists()
    assert torch.load.__module__ == "torch.serialization"  # put back after the load


@pytest.mark.parametrize("allow_pickle", [False, True], ids=["default", "allow-pickle"])
@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_index_naming_a_shard_outside_the_folder_is_refused(good, tmp_path, where, allow_pickle):
    """The outside shard holds the model's real weights: without the check, transformers would read it and load."""
    folder = copy_of(good, "escaping")
    outside = tmp_path / "outside.safetensors"
    shutil.move(folder / "model.safetensors", outside)
    shard = "../outside.safetensors" if where == "parent" else str(outside)
    keys = list(load_file(str(outside)))
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: shard for k in keys}}))
    refused(folder, "model.safetensors.index.json", f"'{shard}'", "outside the model folder",
            allow_pickle=allow_pickle)


def test_config_naming_weights_outside_the_folder_is_refused(good, tmp_path):
    folder = copy_of(good, "escaping-config")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "transformers_weights": "../good/model.safetensors"}))
    refused(folder, "transformers_weights", "outside the model folder", allow_pickle=True)


@pytest.mark.parametrize("text", ["{not json", "[]", '{"weight_map": {"a": 3}}'], ids=["not-json", "list", "number"])
def test_unreadable_index_is_one_line(good, text):
    folder = copy_of(good, "bad-index")
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text(text)
    refused(folder, "model.safetensors.index.json is not a readable shard index")


# --------------------------------------------------------------------------------------------- never random weights

def _rewrite_weights(folder: Path, edit) -> None:
    sd = load_file(str(folder / "model.safetensors"))
    save_file(edit(sd), str(folder / "model.safetensors"))


def test_safetensors_with_no_tensors_is_refused(random_model, good):
    model, _ = random_model
    folder = copy_of(good, "empty")
    save_file({}, str(folder / "model.safetensors"))
    n = len(model.state_dict())
    refused(folder, f"the weights lack {n} of the model's {n} tensors", "model.embed_tokens.weight", "random values")


def test_weights_with_a_layer_removed_are_refused(random_model, good):
    folder = copy_of(good, "no-layer-1")
    _rewrite_weights(folder, lambda sd: {k: v for k, v in sd.items() if not k.startswith("model.layers.1.")})
    n = len(random_model[0].state_dict())
    msg = refused(folder, f"the weights lack 9 of the model's {n} tensors", "model.layers.1.input_layernorm.weight",
                  ", ...")
    assert "model.layers.0." not in msg


def test_untied_head_missing_is_refused_but_a_tied_one_is_not(good):
    """lm_head tied to embed_tokens is not missing (test_good_model_loads...); untied, it must come from the weights."""
    folder = copy_of(good, "untied")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    refused(folder, "the weights lack 1 of", "(lm_head.weight)")


def test_weights_of_the_wrong_shape_are_refused(good):
    folder = copy_of(good, "wrong-shape")
    _rewrite_weights(folder, lambda sd: {**sd, "model.norm.weight": torch.ones(7)})
    refused(folder, "do not fit the architecture in config.json", "model.norm.weight is (7,) in the weights, (64,) "
                                                                  "in the model")


def test_weights_with_more_layers_than_config_are_refused(good):
    """config.json cut to one layer: every parameter loads, but the second layer's tensors have no place."""
    folder = copy_of(good, "more-layers")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1}))
    refused(folder, "the weights hold 9 tensors of layers config.json does not declare", "model.layers.1.")


# --------------------------------------------------------------------------------------------- tokenizer vs model

def _bigger_tokenizer(good: Path, extra: int = 40) -> Path:
    from transformers import AutoTokenizer

    folder = copy_of(good, "big-tokenizer")
    tok = AutoTokenizer.from_pretrained(str(good))
    tok.add_tokens([f"<extra_{i}>" for i in range(extra)])
    tok.save_pretrained(folder)
    return folder


def test_tokenizer_bigger_than_the_embeddings_is_refused(random_model, good):
    model, tok = random_model
    rows = model.get_input_embeddings().num_embeddings
    folder = _bigger_tokenizer(good)
    refused(folder, f"the tokenizer has {len(tok) + 40} tokens", f"embedding matrix has {rows} rows")


# --------------------------------------------------------------------------------------------- the command line

def run_audit(model: Path, bench: Path, out: Path):
    p = subprocess.run([sys.executable, "-m", "obliviate", "audit", "--model", str(model), "--data", str(bench),
                        "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=300, check=False,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return p.returncode, p.stderr


def error_line(code, err) -> str:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith(ERROR)]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("damage", ["index-bomb", "empty-weights", "big-tokenizer"])
def test_command_line_refuses_with_one_line(damage, good, small_bench_dir, tmp_path):
    marker = tmp_path / "pwned"
    if damage == "index-bomb":
        folder = copy_of(good, "index-bomb")
        _index_to_bomb(folder, marker)
        needles = ["pytorch_model-00001-of-00001.bin", "pickle", "pass --allow-pickle if you trust the file"]
    elif damage == "empty-weights":
        folder = copy_of(good, "empty")
        save_file({}, str(folder / "model.safetensors"))
        needles = ["the weights lack", "model.embed_tokens.weight"]
    else:
        folder = _bigger_tokenizer(good)
        needles = ["the tokenizer has", "embedding matrix has"]
    out = tmp_path / "run"
    code, err = run_audit(folder, small_bench_dir, out)
    line = error_line(code, err)
    assert "LOAD REPORT" not in err  # transformers' table would only repeat the line
    assert line.startswith(f"{ERROR} {folder}: "), line
    for n in needles:
        assert n in line, line
    assert not out.exists()
    assert not marker.exists()
