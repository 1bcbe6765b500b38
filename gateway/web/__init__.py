"""The trial-feasibility page: a browser front end for people who do not write Python.

Why a package of its own: the page is a second way into the same API (criteria in,
patient counts per site out), with its own login (a server-side session cookie and a
CSRF token instead of a bearer header) and its own static files. It calls the very
route functions of :mod:`gateway.api.routes` through a thin same-origin layer
(:mod:`gateway.web.routes`), so a question asked here is checked, priced, charged and
recorded exactly as one asked with ``varde query`` or the SDK.
"""
