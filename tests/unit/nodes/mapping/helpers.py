"""A hospital's export in its own layout (local codes, renamed columns) and its mapping.

Shared by the mapping unit tests and tests/integration/test_mapping_sources.py.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from nodes.mapping.starter import starter_mapping_text
from nodes.synth import generate_registry


def local_export(rows: int = 400, seed: int = 0, site: str = "oslo") -> pd.DataFrame:
    """Synthetic tumours the way a local registry exports them (the starter mapping's layout)."""
    f = generate_registry(site, rows, seed=seed)
    day = pd.to_datetime(f.diagnosis_date)
    stage = f.stage.astype(str).map({"I": "1", "II": "2", "III": "3", "IV": "4", "0": "0"})
    return pd.DataFrame(
        {
            "patient_id": f.patient_id.astype(str),
            "sex": f.sex.astype(str).map({"female": "F", "male": "M"}),
            "birth_date": f.birth_year.astype(str) + "-01-01",
            "diagnosis_date": day.dt.strftime("%Y-%m-%d"),
            "icdo3_topography": f.topography.astype(str).str.replace(".", "", regex=False),
            "icdo3_morphology": f.morphology.astype(str).str.replace("/", "", regex=False),
            "stage": stage,
            "t": f.t_stage.astype(str),
            "n": f.n_stage.astype(str),
            "m": f.m_stage.astype(str),
            "grade": f.grade.astype(str),
            "first_treatment": f.first_treatment.astype(str),
            "days_to_treatment": f.days_to_treatment,
            "trial": f.clinical_trial.astype(str).map({"yes": "1", "no": "0"}),
            "death_date": pd.to_datetime(f.last_contact_date)
            .dt.strftime("%Y-%m-%d")
            .where(f.vital_status.astype(str) == "dead"),
            "last_followup_date": pd.to_datetime(f.last_contact_date).dt.strftime("%Y-%m-%d"),
            "region": f.region.astype(str),
        }
    )


def write_site(folder: Path, export: pd.DataFrame, mapping: str | None = None) -> Path:
    """``registry.csv`` and ``mapping.yaml`` (the starter, unless given) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    export.to_csv(folder / "registry.csv", index=False)
    path = folder / "mapping.yaml"
    path.write_text(mapping if mapping is not None else starter_mapping_text("oslo"))
    return path
