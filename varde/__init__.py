"""Varde: ask cancer registries questions without any patient row leaving a hospital.

This small package holds what both sides of the trust boundary share: the common
schema, the query language, signed envelopes, the error tree and the console
entry point. ``gateway`` and ``nodes`` import it and never each other.
"""

__version__ = "0.1.0"
