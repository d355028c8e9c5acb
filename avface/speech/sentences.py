"""Harvard-sentence-style English sentences from our own word lists (seeded, no external corpus).

The word lists are chosen to cover English phonemes broadly: bilabials (p b m), labiodentals (f v), rounded
vowels (oo, o), spread vowels (ee), open vowels (a, ah), so the mouth motion of a short clip is varied.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["random_sentence", "random_text", "sentence_slug"]

_ADJ = """
small large bright dark old young smooth rough quick slow warm cold blue red green brown pale deep broad thin
round sharp soft loud quiet heavy light fresh stale sweet bitter proud humble busy lazy empty full plain fancy
pink purple golden silver wooden woolen muddy dusty shiny narrow grand tiny happy clever brave calm
""".split()

_NOUN = """
boat book box bird bell ball bread bridge map mouse moon man mother baby puppy pencil paper pipe pool pot
fish fox farmer flag flower vase van voice valley village wave wall window wood wheel road rope river room
cup cake coat cat garden goat girl gate house horse hat key king kitten lamp letter lemon lake leaf
sheep shoe shop ship chair cheese child judge jar jacket tree train table tent toy dog door duck desk
owl orange apple egg island umbrella oven oak ocean elbow
""".split()

_VERB = """
brought bought found moved pushed pulled kept held built broke fixed lifted dropped carried painted washed
opened closed followed watched passed saw knew made took gave showed chose left reached touched
""".split()

_VERB_INTR = """
rolled slipped jumped floated waited moved stopped stood fell ran walked sang barked shone glowed
""".split()

_PREP = "on under over beside behind near across along through into past by from beyond".split()

_ADV = "slowly quickly softly boldly gently barely proudly freely calmly loudly quietly briskly".split()

_TIME = """
this morning, at noon, in the evening, every day, last week, before dinner, after the rain, on Monday,
""".split(",")

_TEMPLATES = [
    "The {adj} {noun} {verb} the {adj2} {noun2}.",
    "A {adj} {noun} {vi} {prep} the {noun2}.",
    "The {noun} {vi} {adv} {prep} the {adj} {noun2}.",
    "{time} the {noun} {verb} a {adj} {noun2}.",
    "My {noun} {verb} the {noun2} {prep} the {noun3}.",
    "Put the {adj} {noun} {prep} the {noun2}.",
    "The {adj} {noun} and the {noun2} {vi} {adv}.",
    "We {verb} the {noun} {prep} the {adj} {noun2} {time}.",
    "Both {noun}s {vi} {prep} the {adj} {noun2}.",
    "Bring me the {adj} {noun} from the {noun2}, please.",
]


def random_sentence(rng: np.random.Generator) -> str:
    """One sentence of roughly 6-11 words."""
    tpl = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]

    def pick(words: list[str]) -> str:
        return words[int(rng.integers(len(words)))].strip()

    s = tpl.format(adj=pick(_ADJ), adj2=pick(_ADJ), noun=pick(_NOUN), noun2=pick(_NOUN), noun3=pick(_NOUN),
                   verb=pick(_VERB), vi=pick(_VERB_INTR), prep=pick(_PREP), adv=pick(_ADV), time=pick(_TIME))
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"\s+([.,])", r"\1", s)
    return s[0].upper() + s[1:]


def random_text(rng: np.random.Generator, num_sentences: int = 1) -> str:
    return " ".join(random_sentence(rng) for _ in range(num_sentences))


def sentence_slug(text: str, max_words: int = 12) -> str:
    """Multiface-style segment name: ``SEN_`` + lower-case words joined by ``_`` (``SEN_the_small_boat_...``)."""
    words = re.findall(r"[a-z0-9']+", text.lower())[:max_words]
    return "SEN_" + "_".join(w.replace("'", "") for w in words)
