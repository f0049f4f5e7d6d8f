"""The README's demo table is the last generated report (benchmarks/demo_figures.py --write), to its printed precision."""

import copy
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ("target", "oracle", "unlearned")


def readme_table() -> dict[str, list[str]]:
    text = (REPO / "README.md").read_text()
    block = text[text.index("<!-- demo-table:start -->"):text.index("<!-- demo-table:end -->")]
    rows = {}
    for line in block.splitlines():
        m = re.match(r"^(\w+)\s+(\S+)\s+(\S+)\s+(\S+)\s+", line)
        if m and m.group(1) != "metric":
            rows[m.group(1)] = [m.group(2), m.group(3), m.group(4)]
    return rows


def mismatches(rows: dict[str, list[str]], figures: dict) -> list[str]:
    """Cells of the README table that do not round from the figure they show (half a unit of the last digit)."""
    bad = []
    for key, shown in rows.items():
        for model, text in zip(MODELS, shown):
            value = figures["metrics"][model][key]
            mantissa, _, exponent = text.partition("e")
            decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
            tol = 0.5 * 10 ** -decimals * 10 ** int(exponent or 0) * 1.0001
            if abs(float(text) - value) > tol:
                bad.append(f"{key} {model}: README {text}, figures {value}")
    return bad


def test_readme_demo_table_equals_the_last_generated_figures():
    figures = json.loads((REPO / "docs" / "figures" / "demo.json").read_text())
    rows = readme_table()
    assert set(rows) == {"forget_quality", "model_utility", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "privleak"}
    assert mismatches(rows, figures) == []


def test_the_check_sees_a_figure_that_moved():
    figures = json.loads((REPO / "docs" / "figures" / "demo.json").read_text())
    moved = copy.deepcopy(figures)
    moved["metrics"]["unlearned"]["model_utility"] += 0.002
    moved["metrics"]["target"]["forget_quality"] *= 1.5
    assert len(mismatches(readme_table(), moved)) == 2
