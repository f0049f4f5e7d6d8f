"""The command line as a new user reads it: every option explained with its default, help at once, names as written
in the README."""

import argparse
import subprocess
import sys

import pytest

from obliviate.cli import build_parser


def subcommands(parser):
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        if name == "data":
            yield from ((f"data {n}", s) for n, s in sub._subparsers._group_actions[0].choices.items())
        else:
            yield name, sub


def options(sub):
    return [a for a in sub._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def test_every_option_has_help_and_a_shown_default():
    missing = []
    for name, sub in subcommands(build_parser()):
        for a in options(sub):
            flag = a.nargs == 0  # store_true: off unless given
            if not a.help:
                missing.append(f"{name} {a.option_strings[0]}: no help")
            elif not flag and not a.required and "default" not in a.help:
                missing.append(f"{name} {a.option_strings[0]}: no default shown")
    assert missing == []


def test_the_checker_sees_a_missing_default():
    p = argparse.ArgumentParser()
    p.add_subparsers(dest="c").add_parser("x").add_argument("--n", type=int, help="a number")
    assert [a.help for _, s in subcommands(p) for a in options(s)] == ["a number"]


def test_options_only_where_they_do_something():
    subs = dict(subcommands(build_parser()))
    flags = {name: {a.option_strings[-1] for a in options(s)} for name, s in subs.items()}
    assert "--pairing" not in flags["finetune"] and "--pairing" in flags["unlearn"]
    for name in ("methods", "report"):
        assert not {"--config", "--quiet"} & flags[name], name
    help_text = subs["audit"].format_help()
    assert "Min-K%" in help_text and "%%" not in help_text


def test_demo_help_says_what_runs():
    text = " ".join(dict(subcommands(build_parser()))["demo"].format_help().split())
    assert "SAM-NPO on forget10 by default" in text and "IdkDPO" not in text.split("With --real")[0]
    assert "default runs/demo; runs/demo-real with --real" in text
    assert "learning rate (default 0.0005, 0.0001 with --real)" in text


def test_help_and_version_load_nothing_heavy():
    """`obliviate --help` answers at once: building the parser imports neither torch nor transformers."""
    code = ("import sys; from obliviate.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    version = subprocess.run([sys.executable, "-m", "obliviate", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("obliviate 0.")


@pytest.mark.parametrize("written", ["CE-U", "ceu", "K-FADE", "kfade", "Grad Diff", "simnpo"])
def test_method_names_as_the_readme_writes_them(written):
    from obliviate.methods import make_method

    assert make_method(written).name.lower().replace("-", "") == written.lower().replace("-", "").replace(" ", "")


def test_unknown_method_lists_unlearning_methods_only():
    from obliviate.errors import ConfigError
    from obliviate.methods import make_method

    with pytest.raises(ConfigError) as e:
        make_method("Forgetron")
    known = str(e.value).split("known: ")[1]
    assert "NPO" in known and "PDU" in known and "finetune" not in known


def test_bench_label_names_the_seed_once():
    from obliviate.recipes.bench import plan

    labels = [r.label for r in plan(["RMU", "NPO"], seeds=[0, 1])]
    assert labels == ["RMU seed=0", "RMU seed=1", "NPO seed=0", "NPO seed=1"]
