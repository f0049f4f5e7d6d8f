"""Verbatim copying and utility of anchored decoding as a function of its budget (the copying-utility curve).

Copying of a generation g against the protected text r, both split into lower-cased words:

    LCS(g, r)     = the length in words of the longest common contiguous substring (dynamic programming)
    overlap_n(g, r) = |{n-grams of g} that occur in r| / |{n-grams of g}|   (multiset over g; 0 when g has none)

``copying_curve`` runs ``scoring.anchored.anchored_generate`` at each budget on the copy prompts (each expected to
draw out its protected text) and on utility questions (answers both models should give), and reports per budget the
mean LCS, the mean n-gram overlap, the mean ROUGE-L recall of the utility answers and the mean KL spent.
"""

from __future__ import annotations

import re

from ..data.collate import PromptFormat
from ..scoring.anchored import anchored_generate
from ..scoring.metrics import rouge_l_recall

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def longest_common_substring(a: list[str], b: list[str]) -> int:
    """Length of the longest run of consecutive words that ``a`` and ``b`` share."""
    best, prev = 0, [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def ngram_overlap(generation: list[str], reference: list[str], n: int = 3) -> float:
    """Share of the generation's word n-grams that occur anywhere in the reference."""
    grams = [tuple(generation[i:i + n]) for i in range(len(generation) - n + 1)]
    if not grams:
        return 0.0
    ref = {tuple(reference[i:i + n]) for i in range(len(reference) - n + 1)}
    return sum(g in ref for g in grams) / len(grams)


def copying_curve(risky, safe, tokenizer, copy_items, utility_items, budgets, max_new_tokens: int = 32, n: int = 3
                  ) -> list[dict]:
    """One row per budget: ``budget``, ``lcs`` and ``overlap`` (means over ``copy_items``, QA items whose answer is the
    protected text), ``utility`` (mean ROUGE-L recall over ``utility_items``), ``spent`` (mean KL used per copy
    prompt)."""
    fmt = PromptFormat(tokenizer)
    copy_prompts = [fmt.prompt_ids(it.question) for it in copy_items]
    util_prompts = [fmt.prompt_ids(it.question) for it in utility_items]
    rows = []
    for budget in budgets:
        gens = anchored_generate(risky, safe, tokenizer, copy_prompts, budget, max_new_tokens)
        utils = anchored_generate(risky, safe, tokenizer, util_prompts, budget, max_new_tokens)
        pairs = [(words(g["text"]), words(it.answer)) for g, it in zip(gens, copy_items)]
        rows.append({
            "budget": budget,
            "lcs": sum(longest_common_substring(g, r) for g, r in pairs) / len(pairs),
            "overlap": sum(ngram_overlap(g, r, n) for g, r in pairs) / len(pairs),
            "utility": sum(rouge_l_recall(u["text"], it.answer) for u, it in zip(utils, utility_items))
            / len(utility_items),
            "spent": sum(g["spent"] for g in gens) / len(gens),
        })
    return rows
