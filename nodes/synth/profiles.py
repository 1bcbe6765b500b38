"""Site profiles: how each site's registry differs from the calibration (the non-IID part).

The named demo sites are in :data:`SITE_PROFILES`; :func:`profile_for` gives any other
site name a stable variation of one of them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

import numpy as np

from nodes.synth.codes import _N_STAGES, _N_TYPES, _TYPE, Floats
from nodes.synth.tables import _BASE_SHARE, _STAGE_MIX
from varde.schema import CANCER_TYPES, COUNTRIES, REGIONS


@dataclass(frozen=True)
class SiteProfile:
    """How one site's registry differs from the calibration (the non-IID part).

    Attributes:
        country: ISO 3166-1 code of the registry (schema ``COUNTRIES``).
        regions: NUTS-2 regions of the catchment area (schema ``REGIONS``, same country).
        region_weights: Relative share of each region (equal if empty).
        age_shift: Years added to the mean age at diagnosis (older rural catchments).
        type_mix: ``(cancer_type, multiplier)`` pairs applied to the national type mix
            (e.g. a thoracic referral centre sees more lung cancer).
        stage_shift: Tilt of the stage I-IV distribution; positive means later stage.
            Stage weight ``j`` (I=1 .. IV=4) is multiplied by ``exp(stage_shift * (j - 2.5))``.
        testing_multiplier: Scales every biomarker testing rate (capped at 99%).
        trial_rate: Share of tumours enrolled in a clinical trial.
        treatment_delay: Scales the mean waiting time to first treatment.
        survival_hr: Hazard ratio of cancer death relative to the calibration.
        follow_up_lag_days: Mean days between the last follow-up and :data:`DATA_AS_OF`.
    """

    country: str
    regions: tuple[str, ...]
    region_weights: tuple[float, ...] = ()
    age_shift: float = 0.0
    type_mix: tuple[tuple[str, float], ...] = ()
    stage_shift: float = 0.0
    testing_multiplier: float = 1.0
    trial_rate: float = 0.05
    treatment_delay: float = 1.0
    survival_hr: float = 1.0
    follow_up_lag_days: float = 14.0

    def __post_init__(self) -> None:
        """Reject profiles that would produce values outside the schema."""
        if self.country not in COUNTRIES:
            raise ValueError(f"unknown country {self.country!r}")
        if not self.regions:
            raise ValueError("a site profile needs at least one region")
        for region in self.regions:
            if region not in REGIONS or not region.startswith(self.country):
                raise ValueError(f"region {region!r} is not a schema region of {self.country}")
        if self.region_weights and (
            len(self.region_weights) != len(self.regions) or min(self.region_weights) <= 0
        ):
            raise ValueError("region_weights must give one positive weight per region")
        for name, multiplier in self.type_mix:
            if name not in _TYPE or not multiplier > 0:
                raise ValueError(f"bad type_mix entry ({name!r}, {multiplier})")
        checks = {
            "age_shift": -10 <= self.age_shift <= 10,
            "stage_shift": -1 <= self.stage_shift <= 1,
            "testing_multiplier": 0 <= self.testing_multiplier <= 3,
            "trial_rate": 0 <= self.trial_rate <= 0.5,
            "treatment_delay": 0 < self.treatment_delay <= 5,
            "survival_hr": 0 < self.survival_hr <= 5,
            "follow_up_lag_days": 0 <= self.follow_up_lag_days <= 60,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"site profile out of range: {', '.join(bad)}")

    def type_shares(self) -> Floats:
        """Probability of each cancer type (schema order) at this site."""
        multipliers = dict(self.type_mix)
        shares = _BASE_SHARE * np.array([multipliers.get(t, 1.0) for t in CANCER_TYPES])
        return np.asarray(shares / shares.sum(), dtype=np.float64)

    def stage_mix(self) -> Floats:
        """P(stage | type) for invasive tumours, one row per type, columns = STAGES."""
        tilt = np.exp(self.stage_shift * (np.arange(_N_STAGES) - 2.5))
        tilt[0] = 0.0  # stage 0 only from in situ morphology
        tilt[-1] = 1.0  # unknown stays as calibrated
        mix = _STAGE_MIX * tilt
        return np.asarray(mix / mix.sum(axis=1, keepdims=True), dtype=np.float64)


SITE_PROFILES: Final[dict[str, SiteProfile]] = {
    # University hospital in the capital: younger urban catchment, national referral centre
    # (more molecular testing and trials), a little more melanoma and lung.
    "oslo": SiteProfile(
        country="NO",
        regions=("NO08", "NO02", "NO09"),
        region_weights=(0.75, 0.10, 0.15),
        age_shift=-1.5,
        type_mix=(("melanoma", 1.1), ("lung", 1.05), ("prostate", 0.95)),
        stage_shift=0.0,
        testing_multiplier=1.15,
        trial_rate=0.07,
        treatment_delay=0.9,
        follow_up_lag_days=7.0,
    ),
    # Western Norway: older catchment, slightly later stage.
    "bergen": SiteProfile(
        country="NO",
        regions=("NO0A", "NO09"),
        region_weights=(0.95, 0.05),
        age_shift=1.5,
        type_mix=(("prostate", 1.05), ("lung", 0.95)),
        stage_shift=0.15,
        testing_multiplier=1.0,
        trial_rate=0.05,
        treatment_delay=1.0,
        follow_up_lag_days=14.0,
    ),
    # Central and northern Norway: oldest, most rural catchment, later stage, fewer tests.
    "trondheim": SiteProfile(
        country="NO",
        regions=("NO06", "NO07"),
        region_weights=(0.8, 0.2),
        age_shift=2.0,
        type_mix=(("lung", 1.1), ("melanoma", 0.9), ("stomach", 1.2)),
        stage_shift=0.25,
        testing_multiplier=0.85,
        trial_rate=0.04,
        treatment_delay=1.15,
        survival_hr=1.05,
        follow_up_lag_days=21.0,
    ),
    "stockholm": SiteProfile(
        country="SE",
        regions=("SE11", "SE12"),
        region_weights=(0.9, 0.1),
        age_shift=0.0,
        type_mix=(("prostate", 1.15), ("melanoma", 1.1), ("lung", 0.85)),
        stage_shift=-0.1,
        testing_multiplier=1.1,
        trial_rate=0.08,
        treatment_delay=1.05,
        survival_hr=0.95,
        follow_up_lag_days=10.0,
    ),
    # Denmark: markedly more lung cancer, somewhat later stage.
    "copenhagen": SiteProfile(
        country="DK",
        regions=("DK01", "DK02"),
        region_weights=(0.8, 0.2),
        age_shift=0.5,
        type_mix=(("lung", 1.35), ("breast", 1.1), ("melanoma", 0.95)),
        stage_shift=0.1,
        testing_multiplier=1.05,
        trial_rate=0.06,
        treatment_delay=0.95,
        survival_hr=1.05,
        follow_up_lag_days=10.0,
    ),
}
"""The named demo sites."""


def _site_entropy(site: str, purpose: str) -> list[int]:
    """Four 32-bit words from SHA-256 of the site name (stable across processes).

    ``hash()`` is salted per process, so it would break reproducibility.
    """
    digest = hashlib.sha256(f"varde-synth/{purpose}/{site}".encode()).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]


def profile_for(site: str) -> SiteProfile:
    """Return the profile of a named site, or a stable variation for any other name.

    Why: tests and demos may invent site names; each must get its own but reproducible
    registry character, derived from SHA-256 of the name (never the salted ``hash()``).

    Args:
        site: Site name, e.g. ``"oslo"``.

    Returns:
        ``SITE_PROFILES[site]`` if listed, else a perturbation of a listed profile (same
        country, a subset of that country's regions); pass ``profile=`` to
        :func:`generate_registry` to choose one explicitly.

    Raises:
        ValueError: If ``site`` is empty.
    """
    if not site:
        raise ValueError("site name must not be empty")
    if site in SITE_PROFILES:
        return SITE_PROFILES[site]
    rng = np.random.default_rng(_site_entropy(site, "profile"))
    base = SITE_PROFILES[sorted(SITE_PROFILES)[int(rng.integers(len(SITE_PROFILES)))]]
    country = base.country
    candidates = [r for r in REGIONS if r.startswith(country)]
    n_regions = int(rng.integers(1, min(3, len(candidates)) + 1))
    picked = rng.choice(len(candidates), size=n_regions, replace=False)
    regions = tuple(candidates[int(i)] for i in sorted(picked))
    multipliers = np.exp(rng.normal(0.0, 0.12, size=_N_TYPES))
    return SiteProfile(
        country=country,
        regions=regions,
        region_weights=tuple(float(w) for w in rng.uniform(0.2, 1.0, size=n_regions)),
        age_shift=float(np.clip(base.age_shift + rng.uniform(-2, 2), -10, 10)),
        type_mix=tuple((t, float(m)) for t, m in zip(CANCER_TYPES, multipliers, strict=True)),
        stage_shift=float(np.clip(base.stage_shift + rng.uniform(-0.15, 0.15), -1, 1)),
        testing_multiplier=float(base.testing_multiplier * rng.uniform(0.8, 1.2)),
        trial_rate=float(rng.uniform(0.03, 0.08)),
        treatment_delay=float(base.treatment_delay * rng.uniform(0.85, 1.2)),
        survival_hr=float(base.survival_hr * rng.uniform(0.9, 1.1)),
        follow_up_lag_days=float(rng.uniform(5, 30)),
    )
