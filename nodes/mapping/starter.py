"""A commented starter mapping for ``varde node init`` (staff edit it to fit their tables)."""

from __future__ import annotations

_STARTER = """\
# Mapping of site {site}: how this hospital's own table becomes Varde's common schema.
# Every field of the schema ('varde schema') is either read from a column, derived by a
# documented rule, one constant, or listed under not_available (then queries that read it
# are refused at this site, by name). Full reference: docs/MAPPING.md.
# Check it against your data, locally, nothing sent:  varde node check-data --mapping THIS_FILE
site: {site}

source:
  kind: csv                  # csv | parquet | sql (SQLAlchemy URL + table or query) | omop
  path: registry.csv         # relative to this file
  delimiter: ","
# source:                    # a database table instead (password from the environment):
#   kind: sql
#   url: postgresql+psycopg://registry:${{REGISTRY_DB_PASSWORD}}@db.hospital.local/registry
#   table: cancer.tumours    # or  query: SELECT ... FROM ...

date_format: "%Y-%m-%d"      # default for every date column (e.g. "%d.%m.%Y")

inputs:                      # source dates that derived fields use (not schema fields)
  birth_date: {{column: birth_date}}
  death_date: {{column: death_date}}                  # empty while alive
  last_followup_date: {{column: last_followup_date}}

fields:
  patient_id: {{column: patient_id}}
  tumour_id: derived                                  # 1, 2, ... if you have no tumour id
  sex: {{column: sex, values: {{F: female, M: male}}}}
  birth_year: derived                                 # from inputs.birth_date
  age_at_diagnosis: derived                           # whole years, birth to diagnosis
  age_band: derived
  diagnosis_date: {{column: diagnosis_date}}
  diagnosis_year: derived
  topography: {{column: icdo3_topography, codes: icd_o3_topography}}   # C34 -> C34.9
  cancer_type: derived                                # grouped from topography
  morphology: {{column: icdo3_morphology, codes: icd_o3_morphology}}   # 81403 -> 8140/3
  behaviour: derived
  stage:                                              # local strings -> grouped stage
    column: stage
    values: {{"1": I, "2": II, "3": III, "4": IV, IA: I, IB: I, IIIA: III, IIIB: III}}
    missing: unknown                                  # empty cell
    others: unknown                                   # any other local code
  t_stage: {{column: t, missing: TX}}
  n_stage: {{column: n, missing: NX}}
  m_stage: {{column: m, missing: MX}}
  grade: {{column: grade, missing: GX}}
  first_treatment: {{column: first_treatment, missing: none}}
  days_to_treatment: {{column: days_to_treatment}}    # may be empty when untreated
  clinical_trial: {{column: trial, values: {{"1": "yes", "0": "no"}}, missing: "no"}}
  vital_status: derived                               # dead if inputs.death_date is set
  last_contact_date: derived                          # death date, else last follow-up
  survival_days: derived
  country: {{value: "NO"}}                              # quote NO: YAML reads it as false
  region: {{column: region}}

not_available:               # fields this site does not have: refused by name, never faked
  - egfr
  - alk
  - ros1
  - kras_g12c
  - braf_v600e
  - her2
  - msi
  - pdl1_tps

# study_fields:              # a study's own columns (declared in the project's policy terms)
#   ecog: {{column: ecog_ps, kind: integer}}
"""


def starter_mapping_text(site: str) -> str:
    """A commented mapping file for ``site`` that loads as it is (a CSV in the common layout).

    >>> from nodes.mapping.loader import check_mapping_text
    >>> check_mapping_text(starter_mapping_text("oslo")).site
    'oslo'
    """
    return _STARTER.format(site=site)
