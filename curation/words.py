"""English noun inflection for labels and subject words, with the ``inflect`` library.

Object labels are kept singular (GroundingDINO's query, the samples' ``label``), while
captions say "two women", "children", "geese". A label must find its caption word in
both directions, irregular plurals included, or its reference silently loses Eq. 6's
subject guidance. ``inflect`` knows the irregular forms; what it gets wrong is fixed here:
words that are plural in form name one thing ("glasses", "jeans": inflect singularises
them to "glass", "jean", a different thing), and a few singulars ending in -s that it
would cut ("bus" -> "bu").
"""

from __future__ import annotations

from functools import lru_cache

# Plural-only nouns: one thing, and GroundingDINO knows them in this form.
PLURALIA = frozenset({"glasses", "sunglasses", "eyeglasses", "jeans", "scissors", "pants", "shorts", "trousers",
                      "headphones", "earphones", "binoculars", "pliers", "tongs", "clothes", "goggles",
                      "leggings", "overalls", "pajamas", "tweezers"})
# Singulars ending in -s that inflect would shorten.
S_SINGULARS = frozenset({"lens", "canvas", "atlas", "gas", "bias", "news", "species", "series", "chassis"})


@lru_cache(maxsize=1)
def _engine():
    import inflect  # pure Python; imported on first use, it builds large tables

    return inflect.engine()


def singular(word: str) -> str:
    """The singular of an English noun (``word`` lower case): "women" -> "woman", "glasses" kept."""
    if word in PLURALIA or word in S_SINGULARS or word.endswith(("ss", "us", "is", "ous")):
        return word
    return _engine().singular_noun(word) or word


@lru_cache(maxsize=4096)
def noun_forms(noun: str) -> tuple[str, ...]:
    """The spellings of ``noun`` (its last word inflected) a caption may use: singular first.

    "person" -> ("person", "people", "persons"); "woman" -> ("woman", "women");
    "glasses" -> ("glasses",).
    """
    words = noun.lower().split()
    if not words:
        return ()
    head, last = words[:-1], words[-1]
    if last in PLURALIA:
        lasts = [last]
    else:
        lasts = [last, _engine().plural_noun(last), last + "s", last + "es"]
    return tuple(dict.fromkeys(" ".join(head + [form]) for form in lasts if form))
