"""The prompt guardrail: a blocklist that runs before any prompt reaches a text-conditioned model.

It is deliberately simple and predictable: a prompt is normalised (Unicode NFKC, zero-width and
control characters removed, case folded, letters separated by dots/dashes/spaces rejoined) and
rejected when one of its words, or a run of its words, is on the blocklist. The built-in list covers
sexual content, graphic violence and self-harm; a deployment extends it with a file of one term per
line (``WORLDLINE_BLOCKLIST=/path/terms.txt`` or the ``extra`` argument). A blocklist is a floor, not
a classifier: it stops the obvious cases and says why, so a player knows what was refused.
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from pathlib import Path
from typing import Iterable

from worldline.core.errors import WorldlineError

MAX_PROMPT_CHARS = 300  # world events are a sentence; longer input is refused, not cut silently

BLOCKLIST: frozenset[str] = frozenset(
    {
        # sexual content
        "porn", "porno", "pornographic", "nude", "nudes", "naked", "nsfw", "sex", "sexual", "explicit sex",
        "hentai", "genitals", "erotic", "rape", "raped", "molest", "child abuse", "csam", "loli",
        # graphic violence and cruelty
        "gore", "gory", "behead", "beheading", "decapitate", "decapitation", "dismember", "dismemberment",
        "torture", "mutilate", "mutilation", "massacre", "mass shooting", "school shooting", "genocide",
        "execution video", "snuff",
        # self-harm
        "suicide", "self harm", "self-harm", "kill myself", "cut myself",
        # terrorism and weapons of mass harm
        "terrorist attack", "suicide bomber", "car bomb", "pipe bomb", "nerve agent", "bioweapon",
        # hate
        "nazi", "swastika", "white power", "ethnic cleansing", "lynching", "kkk",
    }
)

_INVISIBLE = re.compile(r"[\u200b-\u200f\u2060-\u2064\ufeff\u00ad]")  # zero-width and soft-hyphen characters
_SPLIT_LETTERS = re.compile(r"\b(?:[a-z][.\-_* ]){2,}[a-z]\b")  # "p.o.r.n", "g o r e"
_WORD = re.compile(r"[a-z0-9]+")


def normalize(text: str) -> str:
    """Lower-case words separated by single spaces, with the usual evasions undone."""
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", text).casefold()
    text = _SPLIT_LETTERS.sub(lambda m: re.sub(r"[.\-_* ]", "", m.group(0)), text)
    return " ".join(_WORD.findall(text))


@functools.lru_cache(maxsize=8)
def _terms(extra_file: str | None) -> frozenset[str]:
    terms = {normalize(t) for t in BLOCKLIST}
    if extra_file:
        path = Path(extra_file)
        if not path.is_file():
            raise WorldlineError(f"WORLDLINE_BLOCKLIST: no such file: {path}")
        terms |= {normalize(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")}
    return frozenset(t for t in terms if t)


def blocked_term(text: str, extra: Iterable[str] = ()) -> str | None:
    """The first blocklisted term ``text`` contains (whole words), or None."""
    words = normalize(text).split()
    terms = _terms(os.environ.get("WORLDLINE_BLOCKLIST") or None) | {normalize(t) for t in extra}
    longest = max((len(t.split()) for t in terms), default=1)
    for n in range(1, longest + 1):
        for i in range(len(words) - n + 1):
            phrase = " ".join(words[i : i + n])
            if phrase in terms:
                return phrase
    return None


def check_prompt(text: object, extra: Iterable[str] = ()) -> str:
    """Return the prompt with its whitespace tidied, or raise a one-line WorldlineError saying why
    it is refused (not a string, too long, or a blocklisted term)."""
    if not isinstance(text, str):
        raise WorldlineError(f"a prompt must be a string, got {type(text).__name__}")
    text = " ".join(text.split())
    if len(text) > MAX_PROMPT_CHARS:
        raise WorldlineError(f"the prompt has {len(text)} characters, at most {MAX_PROMPT_CHARS} are allowed")
    term = blocked_term(text, extra)
    if term is not None:
        raise WorldlineError(f"the prompt was refused by the guardrail: it contains the blocked term {term!r}")
    return text
