"""What a training job predicts: a named outcome, from the schema or the study fields.

Two built-in outcomes keep every job written before named outcomes valid:
``death_within_2y`` (logistic) and ``overall_survival`` (Cox, time ``survival_days``,
event ``vital_status = dead``). A job may instead name its own:

* :class:`BinaryOutcome` (logistic): a categorical field and the category that counts
  as 1; every other category is 0 and a row with the field missing is left out;
* :class:`TimeToEvent` (Cox): a numeric time field (days, months: any unit, since a Cox
  model only orders times), and a categorical event field with the category that
  means the event happened; other categories are censored at that time, and a row
  missing either is left out.

Both may name schema fields or the job's study fields (:mod:`varde.study_fields`);
a field that defines the outcome cannot also be a feature. Nothing here reads data.

>>> from varde.study_fields import StudyField, declared
>>> with declared([StudyField(name="response", kind="categorical", categories=["CR", "PR", "SD"])]):
...     o = BinaryOutcome(kind="binary", field="response", positive="CR")
>>> outcome_fields(o), outcome_fields("overall_survival")
(('response',), ('vital_status', 'survival_days'))
"""  # noqa: E501

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from varde.schema import FieldKind, FieldSpec
from varde.study_fields import lookup

BUILT_IN: dict[str, tuple[str, ...]] = {
    "death_within_2y": ("vital_status", "survival_days"),
    "overall_survival": ("vital_status", "survival_days"),
}
"""Fields each built-in outcome reads at the node (checked against the site's policy)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _field(name: str, kind: FieldKind, role: str) -> FieldSpec:
    spec = lookup(name)
    if spec is None:
        raise ValueError(f"unknown field {name!r} for the outcome's {role} (see varde schema)")
    if spec.kind is not kind:
        need = "categorical" if kind is FieldKind.CATEGORICAL else "numeric"
        raise ValueError(f"the outcome's {role} {name!r} must be a {need} field")
    return spec


def _category(spec: FieldSpec, value: str, role: str) -> None:
    if value not in spec.categories:
        raise ValueError(
            f"{value!r} is not a category of {spec.name!r} (the outcome's {role}); "
            f"categories: {', '.join(spec.categories)}"
        )


class BinaryOutcome(_Strict):
    """Logistic outcome: 1 where ``field`` is ``positive``, 0 for its other categories."""

    kind: Literal["binary"]
    field: Annotated[str, Field(min_length=1, max_length=80)]
    positive: Annotated[str, Field(min_length=1, max_length=80)]

    @model_validator(mode="after")
    def _known(self) -> BinaryOutcome:
        _category(_field(self.field, FieldKind.CATEGORICAL, "field"), self.positive, "positive")
        return self


class TimeToEvent(_Strict):
    """Cox outcome: ``time`` to ``event`` (= ``event_value``), censored otherwise."""

    kind: Literal["time_to_event"]
    time: Annotated[str, Field(min_length=1, max_length=80)]
    event: Annotated[str, Field(min_length=1, max_length=80)]
    event_value: Annotated[str, Field(min_length=1, max_length=80)]

    @model_validator(mode="after")
    def _known(self) -> TimeToEvent:
        _field(self.time, FieldKind.INTEGER, "time")
        _category(_field(self.event, FieldKind.CATEGORICAL, "event"), self.event_value, "event")
        if self.time == self.event:
            raise ValueError("the outcome's time and event must be different fields")
        return self


NamedOutcome = Annotated[BinaryOutcome | TimeToEvent, Field(discriminator="kind")]
Outcome = Literal["death_within_2y", "overall_survival"] | NamedOutcome
"""A built-in outcome's name, or a named binary or time-to-event outcome."""

MODEL_OUTCOMES: dict[str, tuple[str, ...]] = {
    "logistic": ("death_within_2y", "binary"),
    "cox": ("overall_survival", "time_to_event"),
}
"""Outcomes (a built-in's name or a named outcome's kind) each model fits; the first is its
default."""


def outcome_kind(outcome: Outcome) -> str:
    """A built-in outcome's name, or a named outcome's kind."""
    return outcome if isinstance(outcome, str) else outcome.kind


def outcome_fields(outcome: Outcome) -> tuple[str, ...]:
    """Every field the outcome reads (a site must expose each; none may be a feature)."""
    if isinstance(outcome, str):
        return BUILT_IN[outcome]
    if isinstance(outcome, BinaryOutcome):
        return (outcome.field,)
    return (outcome.time, outcome.event)


def describe_outcome(outcome: Outcome) -> str:
    """The outcome in words (approval requests, audit summaries).

    >>> describe_outcome("death_within_2y")
    'death_within_2y'
    """
    if isinstance(outcome, str):
        return outcome
    if isinstance(outcome, BinaryOutcome):
        return f"{outcome.field} = {outcome.positive}"
    return f"time {outcome.time} to {outcome.event} = {outcome.event_value}"
