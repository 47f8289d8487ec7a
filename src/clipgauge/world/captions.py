"""Free-form captions of scenes, and the closed vocabulary they (and task prompts) are made of.

A caption names each attribute only some of the time (`mention` gives the odds), in varied
word orders and templates, so a model trained on captions must learn each word on its own.
Every word comes from the tables below: `vocabulary()` and `max_caption_words()` read them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from clipgauge.errors import DataError
from clipgauge.world.scene import ATTRIBUTES, SHAPES, Scene
from clipgauge.world.styles import get_style, load_domains

# How often a caption names each attribute (and the domain), unless the caller says otherwise.
DEFAULT_MENTION: dict[str, float] = {
    "shape": 0.85,
    "colour": 0.8,
    "texture": 0.6,
    "count": 0.7,
    "size": 0.5,
    "position": 0.6,
    "domain": 0.7,
}

COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
SHAPE_PLURALS = {shape: shape + ("es" if shape == "cross" else "s") for shape in SHAPES}
GENERIC_NOUNS = (("object", "objects"), ("shape", "shapes"))
TEXTURE_AFTER = {  # the texture said after the noun instead of before it
    "solid": "in a solid color",
    "striped": "with stripes",
    "dotted": "with dots",
    "checkered": "with a checkered pattern",
}
POSITION_PHRASES = {
    "left": ("on the left", "on the left side"),
    "right": ("on the right", "on the right side"),
    "top": ("at the top",),
    "bottom": ("at the bottom",),
    "center": ("in the center", "in the middle"),
}
# How a caption says which domain it shows: before the noun phrase, or after it.
DOMAIN_BEFORE = {
    "cartoon": ("a cartoon of", "a cartoon drawing of", "a clip art image of"),
    "painting": ("a painting of", "an oil painting of", "a painted picture of"),
    "photo": ("a photo of", "a photograph of", "a close photo of"),
    "sketch": ("a sketch of", "a pencil sketch of", "a line drawing of"),
}
DOMAIN_AFTER = {
    "cartoon": ("in a cartoon", "in cartoon style"),
    "painting": ("in a painting", "painted in oil"),
    "photo": ("in a photo",),
    "sketch": ("in a sketch", "drawn in pencil"),
}
NEUTRAL_BEFORE = ("a picture of", "an image of")
THERE = {False: "there is", True: "there are"}
# A group of three or four objects spreads over much of the image, so where it sits is not
# clear: captions name the position of one or two objects only.
MAX_COUNT_WITH_POSITION = 2
SOME = "some"

_TOKEN = re.compile(r"\w+|[^\w\s]")


def caption_words(text: str) -> list[str]:
    """Split text the way the word-level tokenizer does: lower-cased words and punctuation marks."""
    return _TOKEN.findall(text.lower())


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _pick(options: tuple[str, ...] | list[str], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


def _noun_phrase(scene: Scene, said: dict[str, bool], u: list[float]) -> str:
    """e.g. 'two small striped red stars', 'an object with dots', 'some blue shapes'."""
    plural = scene.count > 1
    if said["shape"]:
        if plural and u[0] < 0.3:
            noun = f"{scene.shape} shapes"
        else:
            noun = SHAPE_PLURALS[scene.shape] if plural else scene.shape
    else:
        noun = _pick(GENERIC_NOUNS, u[1])[plural]
    texture_after = said["texture"] and u[2] < 0.3
    words = []
    if said["size"]:
        words.append(scene.size)
    if said["texture"] and not texture_after:
        words.append(scene.texture)
    if said["colour"]:
        words.append(scene.colour)
    words.append(noun)
    if texture_after:
        words.append(TEXTURE_AFTER[scene.texture])
    phrase = " ".join(words)
    if said["count"]:
        return f"{COUNT_WORDS[scene.count]} {phrase}"
    if not plural:
        return f"{_article(phrase)} {phrase}"
    return f"{SOME} {phrase}" if u[3] < 0.4 else phrase


def caption_for(
    scene: Scene,
    domain: str,
    rng: np.random.Generator,
    mention: Mapping[str, float] | None = None,
) -> str:
    """A random caption of `scene` in `domain`, e.g. 'a sketch of two small stars on the left.'

    `mention` overrides the odds (0..1) of naming each attribute or the domain (DEFAULT_MENTION).
    The colour is never named where the domain does not show it (sketch), nor the position of
    more than MAX_COUNT_WITH_POSITION objects.
    """
    odds = dict(DEFAULT_MENTION)
    if mention:
        unknown = sorted(set(mention) - set(odds))
        if unknown:
            raise DataError(f"unknown caption mention key(s) {unknown}; known: {', '.join(odds)}")
        odds.update(mention)
    if not get_style(domain).shows_colour:
        odds["colour"] = 0.0
    if scene.count > MAX_COUNT_WITH_POSITION:
        odds["position"] = 0.0
    u = rng.random(16).tolist()
    said = {key: u[k] < odds[key] for k, key in enumerate(odds)}
    phrase = _noun_phrase(scene, said, u[7:11])
    where = f" {_pick(POSITION_PHRASES[scene.position], u[11])}" if said["position"] else ""
    form = u[12]
    if said["domain"] and form < 0.65:
        text = f"{_pick(DOMAIN_BEFORE[domain], u[13])} {phrase}{where}"
    elif said["domain"]:
        text = f"{phrase}{where}, {_pick(DOMAIN_AFTER[domain], u[13])}"
    elif form < 0.3:
        text = f"{THERE[scene.count > 1]} {phrase}{where}"
    elif form < 0.6:
        text = f"{_pick(NEUTRAL_BEFORE, u[13])} {phrase}{where}"
    else:
        text = f"{phrase}{where}"
    return text + "."


def _phrase_tables() -> list[list[str]]:
    """Every table of interchangeable phrases a caption is built from (for vocabulary/length)."""
    domains = list(load_domains())
    values = {name: [str(v) for v in vals] for name, vals in ATTRIBUTES.items()}
    return [
        [f"{s} shapes" for s in SHAPES] + list(SHAPE_PLURALS.values()) + values["shape"],
        [noun for pair in GENERIC_NOUNS for noun in pair],
        values["colour"],
        values["texture"],
        values["size"],
        list(TEXTURE_AFTER.values()),
        list(COUNT_WORDS.values()) + ["a", "an", SOME],
        [p for phrases in POSITION_PHRASES.values() for p in phrases],
        [p for d in domains for p in DOMAIN_BEFORE.get(d, ())] + list(NEUTRAL_BEFORE),
        [p for d in domains for p in DOMAIN_AFTER.get(d, ())],
        list(THERE.values()),
        [".", ","],
    ]


def vocabulary() -> list[str]:
    """Every word or punctuation mark a caption can contain, sorted; task prompts must use these."""
    return sorted({w for table in _phrase_tables() for p in table for w in caption_words(p)})


def max_caption_words() -> int:
    """The most words (punctuation marks included) any caption can have, before BOS/EOS tokens."""
    noun, _, colour, texture, size, after, count, where, before, after_domain, there, _ = (
        max(len(caption_words(p)) for p in table) for table in _phrase_tables()
    )
    # The texture goes before the noun or after it, never both.
    phrase = count + size + colour + max(texture + noun, noun + after)
    return max(before, 1 + after_domain, there) + phrase + where + 1
