"""Request examples for the API documents: what a researcher can paste into ``/docs`` and run.

Why in one module: each example is parsed by the very model it illustrates in
``tests/unit/gateway/test_api_docs.py``, so an example that no longer validates
fails the suite instead of misleading a reader of the docs.
"""

from __future__ import annotations

from typing import Any

LUNG_STAGE_IV: dict[str, Any] = {
    "op": "and",
    "args": [
        {"op": "startswith", "field": "topography", "prefix": "C34"},
        {"op": "eq", "field": "stage", "value": "IV"},
    ],
}

QUERY_EXAMPLES: dict[str, dict[str, Any]] = {
    "feasibility": {
        "summary": "Trial feasibility: how many patients per site?",
        "description": "Stage IV NSCLC, EGFR positive, age 18-75, diagnosed 2020 or later; each "
        "patient counted once (unit patients: by their first matching tumour); each "
        "site charges epsilon 0.5 of the project's budget and adds OpenDP noise.",
        "value": {
            "project": "nsclc-feasibility",
            "cohort": {
                "op": "and",
                "args": [
                    *LUNG_STAGE_IV["args"],
                    {"op": "eq", "field": "egfr", "value": "positive"},
                    {"op": "between", "field": "age_at_diagnosis", "low": 18, "high": 75},
                    {"op": ">=", "field": "diagnosis_year", "value": 2020},
                ],
            },
            "statistic": {"kind": "count"},
            "unit": "patients",
            "privacy": {"mode": "dp", "epsilon": 0.5},
        },
    },
    "accuracy": {
        "summary": "Ask for an accuracy instead of an epsilon",
        "description": "Plus or minus 10 at 95%: each site spends the least epsilon its own "
        "policy needs for that, and refuses (uncharged) if it is above its cap.",
        "value": {
            "project": "nsclc-feasibility",
            "cohort": LUNG_STAGE_IV,
            "statistic": {"kind": "count"},
            "group_by": ["sex"],
            "privacy": {"mode": "dp", "accuracy": {"pm95": 10}},
        },
    },
    "survival": {
        "summary": "Kaplan-Meier survival, yearly to five years",
        "value": {
            "project": "nsclc-feasibility",
            "cohort": LUNG_STAGE_IV,
            "statistic": {"kind": "survival", "interval_months": 12, "horizon_months": 60},
            "privacy": {"mode": "dp", "epsilon": 0.5},
        },
    },
    "funnel": {
        "summary": "Attrition funnel of a trial's criteria",
        "value": {
            "project": "nsclc-feasibility",
            "cohort": {"op": "startswith", "field": "topography", "prefix": "C34"},
            "statistic": {
                "kind": "funnel",
                "steps": [
                    {
                        "label": "stage IV",
                        "criterion": {"op": "eq", "field": "stage", "value": "IV"},
                    },
                    {
                        "label": "age 18-75",
                        "criterion": {
                            "op": "between",
                            "field": "age_at_diagnosis",
                            "low": 18,
                            "high": 75,
                        },
                    },
                ],
            },
            "privacy": {"mode": "dp", "epsilon": 0.6},
        },
    },
    "histogram-zcdp": {
        "summary": "Stage histogram in a zCDP project (rho instead of epsilon)",
        "value": {
            "project": "nsclc-feasibility",
            "cohort": {"op": "startswith", "field": "topography", "prefix": "C34"},
            "statistic": {"kind": "histogram", "field": "stage"},
            "privacy": {"mode": "zcdp", "rho": 0.05},
        },
    },
}

TRAINING_EXAMPLES: dict[str, dict[str, Any]] = {
    "logistic": {
        "summary": "Two-year mortality, logistic regression over the sites",
        "value": {
            "project": "nsclc-feasibility",
            "model": "logistic",
            "features": ["age_at_diagnosis", "sex", "stage"],
            "rounds": 2,
            "privacy": {"epsilon": 1.5},
        },
    },
}

ENROLL_EXAMPLES: dict[str, dict[str, Any]] = {
    "enroll": {
        "summary": "A new node presents its one-time token and its public key",
        "value": {
            "token": "et_one-time-token-from-the-gateway-admin",
            "site": "oslo",
            "public_key": "MCowBQYDK2VwAyEA2ffS0Rm9yqWz3G0b8ZqTaC2hG4m0m6Qk9Xz1yYt6bW8=",
        },
    },
}
