"""The statistic methods of :class:`~varde_client.client.VardeClient`: ``client.count(...)``...

Each method builds its query with :mod:`varde_client.questions`, checks every
field and category against the gateway's own schema (``GET /v1/schema``, fetched
once per client), and only then sends it: to ``POST /v1/queries``, or with
``preview=True`` to the free preview (``client.preview``: what each site would
charge and how accurate the numbers would be; nothing is charged).

Why a mixin in its own module: the client's transport (``query``, ``preview``,
``schema``, errors) stays in ``client.py``; this module only turns arguments
into a validated :class:`~varde.query.Query` and hands it over.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias, Unpack

import pandas as pd

from varde.query import Query
from varde_client import questions
from varde_client.cohort import Criterion, Schema
from varde_client.frames import QueryResponse
from varde_client.questions import By, ClientOptions, Options

Answer: TypeAlias = QueryResponse | pd.DataFrame
"""A :class:`QueryResponse`, or with ``preview=True`` the preview frame."""


class _Client(Protocol):
    _question_schema: Schema | None

    def query(self, spec: dict[str, Any] | Query) -> QueryResponse: ...

    def preview(self, spec: dict[str, Any] | Query) -> pd.DataFrame: ...

    def schema(self) -> pd.DataFrame: ...


def _options(client: _Client, options: ClientOptions) -> Options:
    """The builder's options with the gateway's schema (fetched once per client)."""
    if client._question_schema is None:
        client._question_schema = Schema.of(client.schema())
    return {**options, "schema": client._question_schema}


def _send(client: _Client, query: Query, preview: bool) -> Answer:
    if not isinstance(preview, bool):
        raise TypeError(f"preview is True or False, not {preview!r}")
    return client.preview(query) if preview else client.query(query)


class QuestionMethods:
    """One method per statistic: count, survival, funnel, quantile, crosstab, mean, sum, histogram.

    Every method takes the project as ``project=``, privacy as exactly one of
    ``epsilon=``, ``rho=`` or ``aggregate=True``, optional ``sites=`` and
    ``timeout_s=``, and ``preview=True`` for the preview frame instead of an
    answer. A field or category the gateway does not know raises
    :class:`~varde_client.cohort.UnknownField` / ``UnknownCategory`` (with close
    matches) before anything is sent.
    """

    _question_schema: Schema | None = None

    def count(
        self: _Client,
        cohort: Criterion | None = None,
        by: By = None,
        *,
        project: str,
        preview: bool = False,
        **options: Unpack[ClientOptions],
    ) -> Answer:
        """Number of tumours, or of patients with ``unit="patients"``, in the cohort (per group)."""
        built = questions.count(project, cohort, by, **_options(self, options))
        return _send(self, built, preview)

    def survival(
        self: _Client,
        cohort: Criterion | None = None,
        by: By = None,
        *,
        project: str,
        months: int = 60,
        interval: int = 12,
        preview: bool = False,
        **options: Unpack[ClientOptions],
    ) -> Answer:
        """Kaplan-Meier survival every ``interval`` months up to ``months`` (DP only)."""
        built = questions.survival(
            project, cohort, by, months=months, interval=interval, **_options(self, options)
        )
        return _send(self, built, preview)

    def funnel(
        self: _Client,
        steps: Sequence[tuple[str, Criterion]],
        cohort: Criterion | None = None,
        by: By = None,
        *,
        project: str,
        preview: bool = False,
        **options: Unpack[ClientOptions],
    ) -> Answer:
        """Attrition: the count left after each ``(label, criterion)`` step, in order."""
        built = questions.funnel(project, steps, cohort, by, **_options(self, options))
        return _send(self, built, preview)

    def quantile(
        self: _Client,
        field: str,
        candidates: Sequence[float],
        cohort: Criterion | None = None,
        by: By = None,
        *,
        project: str,
        alphas: Sequence[float] = (0.5,),
        preview: bool = False,
        **options: Unpack[ClientOptions],
    ) -> Answer:
        """Quantiles of a numeric ``field`` over the public grid ``candidates`` (median default)."""
        built = questions.quantile(
            project, field, candidates, cohort, by, alphas=alphas, **_options(self, options)
        )
        return _send(self, built, preview)

    def crosstab(
        self: _Client,
        fields: Sequence[str],
        cohort: Criterion | None = None,
        by: By = None,
        *,
        project: str,
        preview: bool = False,
        **options: Unpack[ClientOptions],
    ) -> Answer:
        """Counts over every combination of the public categorical ``fields``."""
        built = questions.crosstab(project, fields, cohort, by, **_options(self, options))
        return _send(self, built, preview)

    def mean(
        self: _Client,
        field: str,
        lower: float,
        upper: float,
        cohort: Criterion | None = None,
        by: By = None,
        *,
        project: str,
        preview: bool = False,
        **options: Unpack[ClientOptions],
    ) -> Answer:
        """Mean of ``field``, each value clamped to the declared ``[lower, upper]``."""
        built = questions.mean(project, field, lower, upper, cohort, by, **_options(self, options))
        return _send(self, built, preview)

    def sum(
        self: _Client,
        field: str,
        lower: float,
        upper: float,
        cohort: Criterion | None = None,
        by: By = None,
        *,
        project: str,
        preview: bool = False,
        **options: Unpack[ClientOptions],
    ) -> Answer:
        """Sum of ``field``, each value clamped to the declared ``[lower, upper]``."""
        built = questions.sum(project, field, lower, upper, cohort, by, **_options(self, options))
        return _send(self, built, preview)

    def histogram(
        self: _Client,
        field: str,
        cohort: Criterion | None = None,
        by: By = None,
        *,
        project: str,
        bins: Sequence[float] | None = None,
        categories: Sequence[str] | None = None,
        preview: bool = False,
        **options: Unpack[ClientOptions],
    ) -> Answer:
        """Counts per public category of ``field`` (or ``categories``), or per numeric ``bins``."""
        built = questions.histogram(
            project,
            field,
            cohort,
            by,
            bins=bins,
            categories=categories,
            **_options(self, options),
        )
        return _send(self, built, preview)
