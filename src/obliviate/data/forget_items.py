"""What `obliviate forget` trains on: the target's knowledge in every way a probe may ask for it, from text only.

A real target comes with probes (held out: never trained on) and, at most, a name, aliases and a few facts. The
forget stream is built from what the model itself says about the target (``recipes.forget`` asks it), turned into the
shapes the probes take:

* ``direct``: the model's answers to open questions about the target (``question_templates``), asked with RWKU's
  question instruction, as probes are asked;
* ``cloze``: sentences the model wrote that mention the target, their last words blanked (``cloze_item``);
* ``reverse``: the same sentences with every mention of the target replaced by "this person" (or "this"), asking who
  or what is described; the answer is the target's name (``reverse_item``), so the name stops following from the
  facts, which is what a reverse query tests;
* ``adversarial``: direct and reverse questions wrapped in the attack framings (``data.real_targets.ATTACKS``).

The retain stream is the model's own right answers to general questions (``GENERAL_RETAIN_ANSWERS``, disjoint from
the utility probes of ``resources/realworld.json``) and its answers about the neighbour entities (open prompts and the
short questions ``NEIGHBOUR_QUESTIONS``), so what the model says rightly elsewhere, and about what sits next to the
target, is what it keeps saying.
"""

from __future__ import annotations

import re

from .real_targets import normalize_words, surname

PERSON_QUESTIONS = (
    "Who is {name}?", "What is {name} best known for?", "Where was {name} born?", "When was {name} born?",
    "What nationality is {name}?", "What was {name}'s profession?", "What are {name}'s most famous achievements?",
    "What awards or honours did {name} receive?", "Where did {name} live and work?",
    "Who are the people most associated with {name}?",
)
OTHER_QUESTIONS = (
    "What is {name}?", "What is {name} best known for?", "Where is {name} from or located?",
    "Who created or founded {name}?", "When did {name} begin or first appear?", "Why is {name} famous?",
    "What are the most important facts about {name}?", "What is the history of {name}?",
)
# General knowledge the model answers itself for the retain stream, with the answers that count as right; none of these
# is a utility probe. Only the model's right answers are kept: SmolLM2-135M answers about half of them wrongly ("The
# capital of India is Mumbai", "The tallest animal is the Blue Whale"); a wrong answer is not knowledge to protect, and
# the misses after forgetting looked like their pattern ("The capital of Australia is Sydney", "The largest mammal on
# Earth is the elephant"; docs/forget.md, "Retaining the model's own mistakes")
GENERAL_RETAIN_ANSWERS: dict[str, tuple[str, ...]] = {
    "How many continents are there?": ("seven", "7"),
    "What is the capital of France?": ("Paris",),
    "What is the capital of Japan?": ("Tokyo",),
    "What is the capital of Spain?": ("Madrid",),
    "What is the capital of Germany?": ("Berlin",),
    "What is the capital of China?": ("Beijing",),
    "What is the capital of India?": ("New Delhi", "Delhi"),
    "What is the capital of the United Kingdom?": ("London",),
    "How many minutes are in an hour?": ("sixty", "60"),
    "How many days are in a year?": ("365", "366"),
    "How many months are in a year?": ("twelve", "12"),
    "What is 3 plus 5?": ("eight", "8"),
    "What is 10 minus 4?": ("six", "6"),
    "What is 6 times 7?": ("forty-two", "forty two", "42"),
    "What is the largest planet in the solar system?": ("Jupiter",),
    "What planet do we live on?": ("Earth",),
    "What is the closest star to the Earth?": ("Sun",),
    "What do cows drink?": ("water",),
    "What do plants need to grow?": ("sunlight", "light", "water"),
    "What is the tallest animal?": ("giraffe",),
    "What animal is known as the king of the jungle?": ("lion",),
    "What is the color of grass?": ("green",),
    "How many legs does a dog have?": ("four", "4"),
    "What is the hardest natural substance?": ("diamond",),
    "What metal is liquid at room temperature?": ("mercury",),
    "What gas do humans need to breathe?": ("oxygen",),
    "What is the main ingredient of bread?": ("flour", "wheat"),
    "What is the largest desert in the world?": ("Sahara", "Antarctic", "Antarctica"),
    "What is the longest river in South America?": ("Amazon",),
    "Which ocean lies between Europe and America?": ("Atlantic",),
    "What language is spoken in France?": ("French",),
    "What language is spoken in Germany?": ("German",),
    "What is the currency of Japan?": ("yen",),
    "What is the currency of the United Kingdom?": ("pound", "pound sterling"),
    "How many players are on a soccer team?": ("eleven", "11"),
    "What shape has four equal sides?": ("square", "rhombus"),
    "What is the opposite of up?": ("down",),
    "What season comes after winter?": ("spring",),
    "What is the boiling point of water in Fahrenheit?": ("212",),
    "What instrument has black and white keys?": ("piano",),
    "What do you call a baby cat?": ("kitten",),
    "What is the largest country by area?": ("Russia",),
    "Which bird is a symbol of peace?": ("dove",),
    "What organ do we use to breathe?": ("lungs", "lung"),
    "What is the chemical symbol for oxygen?": ("O",),
    "How many wheels does a bicycle have?": ("two", "2"),
    "What color do you get by mixing blue and yellow?": ("green",),
    "What is the square root of 9?": ("three", "3"),
    "What is the capital of Portugal?": ("Lisbon",),
    "What is the capital of Norway?": ("Oslo",),
    "What is the capital of South Korea?": ("Seoul",),
    "What is the capital of Ireland?": ("Dublin",),
    "What is the capital of Argentina?": ("Buenos Aires",),
    "What is the capital of Thailand?": ("Bangkok",),
    "What language is spoken in Italy?": ("Italian",),
    "What language is spoken in Japan?": ("Japanese",),
    "What is the currency of the European Union?": ("euro",),
    "What is the currency of India?": ("rupee",),
    "How many seconds are in a minute?": ("sixty", "60"),
    "How many weeks are in a year?": ("fifty-two", "fifty two", "52"),
    "How many legs does an insect have?": ("six", "6"),
    "How many planets are in the solar system?": ("eight", "8"),
    "What is 5 plus 7?": ("twelve", "12"),
    "What is 9 minus 3?": ("six", "6"),
    "What is 4 times 5?": ("twenty", "20"),
    "What is half of 10?": ("five", "5"),
    "What planet is closest to the Sun?": ("Mercury",),
    "What is the natural satellite of the Earth?": ("Moon",),
    "What do caterpillars turn into?": ("butterfly", "butterflies", "moth", "moths"),
    "What is the largest bird?": ("ostrich",),
    "What do pandas eat?": ("bamboo",),
    "Which animal is known as man's best friend?": ("dog",),
    "What is the fastest land animal?": ("cheetah",),
    "What color is a banana?": ("yellow",),
    "What color is snow?": ("white",),
    "What is the largest continent?": ("Asia",),
    "What is the smallest prime number?": ("two", "2"),
    "What do you call a baby dog?": ("puppy",),
    "Which season is the hottest?": ("summer",),
    "What is the meal eaten in the morning called?": ("breakfast",),
    "What instrument has six strings?": ("guitar",),
    "What is the main ingredient in guacamole?": ("avocado", "avocados"),
    "In which direction does the sun rise?": ("east",),
    "What is the largest organ of the human body?": ("skin",),
    "How many bones are in the adult human body?": ("206",),
}
OPEN_RETAIN_TEMPLATES = ("Tell me about {name}.", "What is {name} best known for?")
# Short questions about each neighbour entity, asked as the probes are asked (the question instruction); the kind of a
# neighbour is not known, so the wording fits a person, a place, an organisation or an office.
NEIGHBOUR_QUESTIONS = (
    "Who or what is {name}?", "What is {name} best known for?", "What are the most important facts about {name}?",
    "When did {name} become prominent, and where?", "Who or what is most closely associated with {name}?",
)

_SENTENCE = re.compile(r"[^.!?]+[.!?]")
_FUNCTION_WORDS = {"a", "an", "the", "of", "in", "on", "at", "to", "for", "and", "or", "as", "by", "with", "from",
                   "his", "her", "its", "their", "is", "was", "were", "be"}


def question_templates(kind: str) -> tuple[str, ...]:
    """The open questions asked about a target of this kind ("person" or anything else)."""
    return PERSON_QUESTIONS if kind in ("person", "") else OTHER_QUESTIONS


def mentions(name: str, aliases: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Ways a text names the target: the name, its aliases and its surname (``real_targets.surname``: the last word of
    a multi-word name, not "Jr."), longest first."""
    out = {name, *aliases, surname(name) or ""}
    return sorted((m for m in out if m.strip()), key=len, reverse=True)


def mention_pattern(names: list[str]) -> re.Pattern:
    alts = "|".join(re.escape(n) for n in names)
    return re.compile(rf"(?<![\w])(?:{alts})(?:'s)?(?![\w])", re.IGNORECASE)


def sentences_about(texts: list[str], name: str, aliases: list[str] | tuple[str, ...] = (), min_words: int = 5,
                    max_words: int = 40) -> list[str]:
    """Whole sentences of ``texts`` that mention the target, deduplicated (normalised words), in order."""
    pat = mention_pattern(mentions(name, aliases))
    seen, out = set(), []
    for text in texts:
        for s in _SENTENCE.findall(text):
            s = " ".join(s.split())
            n = len(s.split())
            key = " ".join(normalize_words(s))
            if min_words <= n <= max_words and pat.search(s) and key not in seen:
                seen.add(key)
                out.append(s)
    return out


def reverse_item(sentence: str, name: str, aliases: list[str] | tuple[str, ...] = (), kind: str = "person"):
    """``(question, answer)`` asking who (or what) a sentence describes, every mention of the target replaced; None
    when the masked sentence would say too little (fewer than four words besides the mask)."""
    placeholder = "this person" if kind in ("person", "") else "this"
    masked = mention_pattern(mentions(name, aliases)).sub(
        lambda m: placeholder + ("'s" if m.group(0).lower().endswith("'s") else ""), sentence)
    masked = masked[:1].upper() + masked[1:]
    rest = [w for w in normalize_words(masked) if w not in normalize_words(placeholder)]
    if len(rest) < 4:
        return None
    who = "Who" if kind in ("person", "") else "What"
    return f"{who} is described here? {masked}", name


def renamer(names: list[str], full: str, short: str | None):
    """A function replacing every mention in ``names`` (and its possessive) by ``full``, or by ``short`` where the
    mention is a one-word surname."""
    pat = mention_pattern(names)

    def sub(text: str) -> str:
        def one(m):
            word = m.group(0)
            tail = word[-2:] if word.lower().endswith("'s") else ""
            base = word[:len(word) - len(tail)]
            alone = len(base.split()) == 1 and len(names[0].split()) > 1
            return (short if alone and short else full) + tail
        return pat.sub(one, text)
    return sub


def cloze_item(sentence: str, name: str, aliases: list[str] | tuple[str, ...] = (), blank_words: int = 2):
    """``(sentence with its last words blanked as ___, the blanked words)``: up to ``blank_words`` final words, less
    any leading function words ("of reality" blanks "reality"); None when the blank would cover the target's name or
    leave fewer than four words before it."""
    body = sentence.rstrip(".!?")
    words = body.split()
    n = blank_words
    while n > 1 and words[-n].lower() in _FUNCTION_WORDS:
        n -= 1
    if len(words) < n + 4 or words[-1].lower() in _FUNCTION_WORDS:
        return None
    answer = " ".join(words[-n:])
    if mention_pattern(mentions(name, aliases)).search(answer):
        return None
    return " ".join(words[:-n]) + " ___" + sentence[len(body):], answer.strip(",;:")


__all__ = ["GENERAL_RETAIN_ANSWERS", "NEIGHBOUR_QUESTIONS", "OPEN_RETAIN_TEMPLATES", "OTHER_QUESTIONS",
           "PERSON_QUESTIONS", "cloze_item", "mention_pattern", "mentions", "question_templates", "renamer",
           "reverse_item", "sentences_about"]
