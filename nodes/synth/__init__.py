"""Seeded synthetic cancer registries in the common schema (one row per tumour).

Why synthetic: the demo, the tests and the benchmarks need registries that look like a
hospital's (type mix, age, stage, biomarkers, treatment, survival) and that differ between
sites the way real ones do (non-IID: older catchments, later stage, fewer molecular tests),
without a single real patient. Proportions are calibrated on public figures
(``../shared/data/registry-facts.md``, Cancer in Norway 2022-2023); the rows stay synthetic.

Why vectorised: a node must be able to load a million-row registry in seconds, so every
column is drawn with numpy over whole arrays. The only Python loops run over small public
tables (cancer types, biomarkers), never over rows.

How a registry is drawn, patient first, so that multi-tumour patients stay consistent:

1. patients and their tumour count (1, 2 or 3); every tumour gets a diagnosis date from the
   (slowly rising) incidence curve and a patient's earliest is the index tumour, which gets a
   type, the patient a sex (given that type) and an age, hence a birth date;
2. further tumours get a type given the patient's sex;
3. every tumour gets topography and morphology (consistent with its type), behaviour (from
   the morphology suffix), grouped stage, TNM (consistent with the stage) and grade; a
   tumour followed by a later diagnosis gets its stage given that the patient survived
   until then (so stage IV lung rarely precedes a second primary by years);
4. a patient dies once: at the earliest of the tumours' cancer deaths (Weibull) and a
   background (Gompertz) death, all conditional on being alive at the last diagnosis;
   follow-up is censored at :data:`DATA_AS_OF`;
5. biomarkers (tested only where they mean something, more often in later years), first
   treatment (stage- and biomarker-driven), waiting time and trial enrolment.

Every parameter lives in a module-level table: biomarker prevalence and testing rates all in
:data:`BIOMARKER_PREVALENCE`; site differences all in :class:`SiteProfile`.

The package, one job per module (each imports only those above it):

- :mod:`~nodes.synth.codes`: schema categories as integer codes, array types;
- :mod:`~nodes.synth.dates`: the diagnosis window, :data:`DATA_AS_OF`, day arithmetic;
- :mod:`~nodes.synth.tables`: per cancer type shares, age, stage, histology, grade, TNM and
  survival constants;
- :mod:`~nodes.synth.treatment`: first-treatment and waiting-time tables;
- :mod:`~nodes.synth.biomarkers`: :class:`MarkerRule`, :data:`BIOMARKER_PREVALENCE`;
- :mod:`~nodes.synth.profiles`: :class:`SiteProfile`, :data:`SITE_PROFILES`,
  :func:`profile_for`;
- :mod:`~nodes.synth.survival`: cancer and background death draws;
- :mod:`~nodes.synth.sampler`: :func:`generate_registry`, which draws the rows.

Files are read and written by :mod:`nodes.registry_io` (re-exported here).
"""

from __future__ import annotations

from nodes.registry_io import PATIENT_ID_DTYPE, conform_registry, read_registry, write_registry
from nodes.synth.biomarkers import BIOMARKER_PREVALENCE, MarkerRule
from nodes.synth.dates import DATA_AS_OF, DIAGNOSIS_END, DIAGNOSIS_START
from nodes.synth.profiles import SITE_PROFILES, SiteProfile, profile_for
from nodes.synth.sampler import generate_registry

__all__ = [
    "BIOMARKER_PREVALENCE",
    "DATA_AS_OF",
    "DIAGNOSIS_END",
    "DIAGNOSIS_START",
    "PATIENT_ID_DTYPE",  # re-exported from nodes.registry_io, like the three below
    "SITE_PROFILES",
    "MarkerRule",
    "SiteProfile",
    "conform_registry",
    "generate_registry",
    "profile_for",
    "read_registry",  # re-exported from nodes.registry_io for callers that generate and read
    "write_registry",
]
