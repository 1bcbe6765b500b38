"""The researcher's client: ask the network questions from Python and get pandas frames back.

>>> from varde_client import VardeClient
>>> # client = VardeClient("http://127.0.0.1:8700", token)

It talks to the gateway over HTTP only and imports nothing of ``gateway`` or
``nodes``: a researcher's laptop installs the wire types (:mod:`varde`) and
this package. The command-line commands a researcher uses (``varde query``,
``varde train``, ``varde trainings``, ``varde schema``) live in
:mod:`varde_client.cli`.
"""

from varde_client.client import VardeClient
from varde_client.cohort import (
    Criterion,
    Field,
    InvalidCriterion,
    UnknownCategory,
    UnknownField,
    all_of,
    any_of,
    validate,
)
from varde_client.cohort_text import CohortSyntaxError, format_cohort_text, parse_cohort_text
from varde_client.errors import (
    AuthenticationFailed,
    AwaitingApproval,
    BudgetExhausted,
    FieldNotAvailable,
    InvalidQuery,
    NotFound,
    PolicyViolation,
    QueryRefused,
    SiteUnavailable,
    VardeHTTPError,
)
from varde_client.frames import QueryResponse
from varde_client.training import TrainingProgress, TrainingResult, TrainingTimeout, training_spec

__all__ = [
    "AuthenticationFailed",
    "AwaitingApproval",
    "BudgetExhausted",
    "CohortSyntaxError",
    "Criterion",
    "Field",
    "FieldNotAvailable",
    "InvalidCriterion",
    "InvalidQuery",
    "NotFound",
    "PolicyViolation",
    "QueryRefused",
    "QueryResponse",
    "SiteUnavailable",
    "TrainingProgress",
    "TrainingResult",
    "TrainingTimeout",
    "UnknownCategory",
    "UnknownField",
    "VardeClient",
    "VardeHTTPError",
    "all_of",
    "any_of",
    "format_cohort_text",
    "parse_cohort_text",
    "training_spec",
    "validate",
]
