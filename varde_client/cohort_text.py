"""A small text form of a cohort for the command line: ``stage=IV and age_at_diagnosis in 18..75``.

>>> from varde_client.cohort_text import format_cohort_text, parse_cohort_text
>>> c = parse_cohort_text("topography^=C34 and (stage=IV or stage=III) and not sex=male")
>>> format_cohort_text(c)
'topography^=C34 and (stage=IV or stage=III) and sex!=male'

Grammar (keywords in any case; ``not`` binds tightest, then ``and``, then ``or``)::

    cohort     := term ("or" term)*
    term       := factor ("and" factor)*
    factor     := "not" factor | "(" cohort ")" | comparison
    comparison := FIELD ("=" | "!=" | "^=" | ">=" | "<=" | ">" | "<") VALUE
                | FIELD "in" VALUE ".." VALUE          (between, both ends included)
                | FIELD "in" "(" VALUE ("," VALUE)* ")"

A value is a bare word (``IV``, ``C34.1``, ``8140/3``, ``2020-01-01``, ``85+``) or
quoted (``pdl1_tps=">=50%"``); the field's kind in the common schema decides
whether it is a category, a number or a date. ``!=`` is ``not ... =`` (a missing
value passes it), and ``>``/``<`` exist where :class:`~varde_client.cohort.Field`
makes them exact (integer and date fields). Each leaf is checked against the
common schema as it is read, so an error names the position and the token.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from varde_client.cohort import (
    AllOf,
    AnyOf,
    AtLeast,
    AtMost,
    CohortError,
    Criterion,
    Equals,
    Field,
    InRange,
    InvalidCriterion,
    IsIn,
    Negation,
    Schema,
    StartsWith,
    UnknownField,
    Value,
    validate,
)

KEYWORDS = ("and", "or", "not", "in")
_OPERATORS = ("!=", "^=", ">=", "<=", "=", ">", "<")
_SPECIAL = set("(),'\"=!^<>")
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_BARE = re.compile(r"[^\s(),'\"=!^<>]+")


class CohortSyntaxError(CohortError):
    """The text is not a cohort; ``position`` and the message name where and what."""


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "string", "op", "(", ")", ",", "..", "end"
    text: str
    pos: int

    def keyword(self, word: str) -> bool:
        return self.kind == "word" and self.text.lower() == word

    def shown(self) -> str:
        return "the end" if self.kind == "end" else repr(self.text)


def _error(tok: _Token, message: str) -> CohortSyntaxError:
    return CohortSyntaxError(
        f"at position {tok.pos} ({tok.shown()}): {message}", value=tok.text, position=tok.pos
    )


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif text.startswith("..", i):
            out.append(_Token("..", "..", i))
            i += 2
        elif ch in "(),":
            out.append(_Token(ch, ch, i))
            i += 1
        elif ch in "'\"":
            end = text.find(ch, i + 1)
            if end < 0:
                raise _error(_Token("string", text[i:], i), f"unterminated quote {ch}")
            out.append(_Token("string", text[i + 1 : end], i))
            i = end + 1
        elif any(text.startswith(op, i) for op in _OPERATORS):
            op = next(o for o in _OPERATORS if text.startswith(o, i))
            out.append(_Token("op", op, i))
            i += len(op)
        else:
            match = _BARE.match(text, i)
            if match is None:  # pragma: no cover - every other character starts a word
                raise _error(_Token("word", ch, i), "unexpected character")
            word = match.group().split("..", 1)[0]  # "18..75" is a range
            out.append(_Token("word", word, i))
            i += len(word)
    out.append(_Token("end", "", len(text)))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.schema = Schema.offline()

    def peek(self) -> _Token:
        return self.toks[self.i]

    def take(self) -> _Token:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, kind: str, what: str) -> _Token:
        tok = self.take()
        if tok.kind != kind:
            raise _error(tok, f"expected {what}")
        return tok

    def cohort(self) -> Criterion:
        out = self.term()
        while self.peek().keyword("or"):
            self.take()
            out = out | self.term()
        return out

    def term(self) -> Criterion:
        out = self.factor()
        while self.peek().keyword("and"):
            self.take()
            out = out & self.factor()
        return out

    def factor(self) -> Criterion:
        tok = self.peek()
        if tok.keyword("not"):
            self.take()
            return ~self.factor()
        if tok.kind == "(":
            self.take()
            inner = self.cohort()
            self.expect(")", "')' closing the '(' at position " + str(tok.pos))
            return inner
        return self.comparison()

    def comparison(self) -> Criterion:
        name = self.take()
        if name.kind != "word" or name.text.lower() in KEYWORDS:
            raise _error(name, "expected a field name, 'not' or '('")
        try:
            kind = self.schema.field(name.text).kind
        except UnknownField as err:
            raise err.at(name.pos, name.text) from None
        op = self.take()
        values: list[tuple[_Token, Value]] = []
        listed = op.keyword("in") and self.peek().kind == "("
        if listed:
            self.take()
            values.append(self.value(kind, name))
            while self.peek().kind == ",":
                self.take()
                values.append(self.value(kind, name))
            self.expect(")", "',' or ')' in the list of values")
        elif op.keyword("in"):
            values.append(self.value(kind, name))
            self.expect("..", "'..' (a range: low..high) or '(' (a list of values)")
            values.append(self.value(kind, name))
        elif op.kind != "op":
            raise _error(op, f"expected an operator after field {name.text!r}: {_OPS_SHOWN}")
        else:
            values.append(self.value(kind, name))
        return self.leaf(name, op, values, listed)

    def value(self, kind: str, field: _Token) -> tuple[_Token, Value]:
        tok = self.take()
        if tok.kind not in ("word", "string") or (
            tok.kind == "word" and tok.text.lower() in KEYWORDS
        ):
            raise _error(tok, f"expected a value for field {field.text!r}")
        if kind != "integer":
            return tok, tok.text  # a category, or a date (checked with the leaf)
        if _INT.fullmatch(tok.text):
            return tok, int(tok.text)
        if _FLOAT.fullmatch(tok.text) and math.isfinite(float(tok.text)):
            return tok, float(tok.text)
        raise _error(tok, f"field {field.text!r} is an integer field: expected a number")

    def leaf(
        self, name: _Token, op: _Token, values: list[tuple[_Token, Value]], listed: bool
    ) -> Criterion:
        f, raw = Field(name.text), [v for _, v in values]
        try:
            if listed:
                built: Criterion = f.isin(raw)
            elif op.keyword("in"):
                built = f.between(*raw)
            else:
                built = _BUILD[op.text](f, raw[0])
            validate(built, self.schema)
        except CohortError as err:
            at = next((t for t, v in values if v == err.value), name)
            raise err.at(at.pos, at.text) from None
        except (TypeError, ValueError) as err:
            raise InvalidCriterion(str(err)).at(op.pos, op.text) from None
        return built


_BUILD = {
    "=": lambda f, v: f == v,
    "!=": lambda f, v: f != v,
    "^=": lambda f, v: f.startswith(str(v)),
    ">=": lambda f, v: f >= v,
    "<=": lambda f, v: f <= v,
    ">": lambda f, v: f > v,
    "<": lambda f, v: f < v,
}
_OPS_SHOWN = "=, !=, ^=, >=, <=, >, <, in a..b or in (a, b)"


def parse_cohort_text(text: str) -> Criterion:
    """Parse the text form into a criterion, checked against the common schema.

    Raises :class:`CohortSyntaxError` for text that is not a cohort, and
    :class:`~varde_client.cohort.UnknownField`, ``UnknownCategory`` or
    ``InvalidCriterion`` for one that names what the schema lacks; every
    message starts with the position and the token.
    """
    if not isinstance(text, str):
        raise TypeError(f"a cohort text is a string, not {type(text).__name__}")
    parser = _Parser(text)
    if parser.peek().kind == "end":
        raise _error(parser.peek(), "the cohort is empty")
    out = parser.cohort()
    tail = parser.take()
    if tail.kind != "end":
        raise _error(tail, "expected 'and', 'or' or the end of the cohort")
    return out


# --- the other way: a criterion as text ------------------------------------------------------


def format_cohort_text(criterion: Criterion) -> str:
    """The text form of ``criterion``; :func:`parse_cohort_text` reads it back to an equal one."""
    if isinstance(criterion, AllOf):
        return " and ".join(_grouped(a, (AnyOf,)) for a in criterion.args)
    if isinstance(criterion, AnyOf):
        return " or ".join(_grouped(a, (AllOf,)) for a in criterion.args)
    if isinstance(criterion, Negation):
        if isinstance(criterion.arg, Equals):
            return f"{criterion.arg.field}!={_text(criterion.arg.value)}"
        return "not " + _grouped(criterion.arg, (AllOf, AnyOf))
    if isinstance(criterion, Equals):
        return f"{criterion.field}={_text(criterion.value)}"
    if isinstance(criterion, IsIn):
        return f"{criterion.field} in ({', '.join(_text(v) for v in criterion.values)})"
    if isinstance(criterion, InRange):
        return f"{criterion.field} in {_text(criterion.low)}..{_text(criterion.high)}"
    if isinstance(criterion, AtLeast):
        return f"{criterion.field}>={_text(criterion.value)}"
    if isinstance(criterion, AtMost):
        return f"{criterion.field}<={_text(criterion.value)}"
    if isinstance(criterion, StartsWith):
        return f"{criterion.field}^={_text(criterion.prefix)}"
    raise TypeError(f"not a criterion: {criterion!r}")


def _grouped(criterion: Criterion, kinds: tuple[type[Criterion], ...]) -> str:
    text = format_cohort_text(criterion)
    return f"({text})" if isinstance(criterion, kinds) else text


def _text(value: Value) -> str:
    if not isinstance(value, str):
        return repr(value)
    bare = _BARE.fullmatch(value) and ".." not in value and not value.endswith(".")
    if bare and value.lower() not in KEYWORDS:
        return value
    if '"' not in value:
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    raise ValueError(f"{value!r} holds both quote characters and has no text form")
