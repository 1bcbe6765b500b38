"""Close matches for a mistyped name: one helper for every "unknown ..." message.

Why shared: the gateway, the nodes and the researcher's SDK all refuse unknown
fields, categories and projects, and a researcher should read the same hint
whichever of them caught the typo (the SDK checks before sending; the server
checks again, since not every caller uses the SDK).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

LISTED = 20
"""Valid names are listed in a message when there are at most this many."""


def suggest(word: str, options: Sequence[str]) -> list[str]:
    """Up to three close matches of ``word`` among ``options``, ignoring case.

    Options that extend ``word`` come first (a code given without its subsite).

    >>> suggest("stge", ["stage", "sex", "grade"])
    ['stage']
    >>> suggest("iv", ["0", "I", "II", "III", "IV"])
    ['IV']
    >>> suggest("C34", ["C33.9", "C34.0", "C34.1", "C34.2", "C34.3", "C93.4"])
    ['C34.0', 'C34.1', 'C34.2']
    """
    extending = [o for o in options if o.lower().startswith(word.lower()) and o != word]
    if extending:
        return extending[:3]
    lowered: dict[str, str] = {}
    for option in options:
        lowered.setdefault(option.lower(), option)
    hits = difflib.get_close_matches(word.lower(), list(lowered), n=3, cutoff=0.6)
    return [lowered[h] for h in hits]


def hint(suggestions: Sequence[str], options: Sequence[str]) -> str:
    """The tail of an error message: the close matches, and every option when there are few.

    >>> hint(["stage"], ["stage", "sex"])
    "; did you mean 'stage'? (valid: stage, sex)"
    """
    out = ""
    if suggestions:
        quoted = [repr(s) for s in suggestions]
        either = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
        out += f"; did you mean {either}?"
    if len(options) <= LISTED:
        out += f" (valid: {', '.join(options)})"
    return out


def unknown(what: str, word: str, options: Sequence[str]) -> str:
    """``unknown <what> 'word'`` with the close matches and (when few) the valid options.

    >>> unknown("field", "stge", ["stage", "sex", "grade"])
    "unknown field 'stge'; did you mean 'stage'? (valid: stage, sex, grade)"
    """
    return f"unknown {what} {word!r}" + hint(suggest(word, options), options)
