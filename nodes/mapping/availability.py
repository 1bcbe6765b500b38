"""Fields a site does not have leave its policy: never advertised, refused by name.

Why at the policy and not the data: every refusal path already goes through the
policy's public terms (:func:`varde.terms.check_query` raises
``FieldNotAvailable`` naming the fields, at the gateway from the manifest and
at the node itself), so a field the mapping lists under ``not_available`` is
taken out of the policy in force. The manifest then does not advertise it, the
gateway refuses a query reading it for this site before fan-out (the other
sites answer), and the node refuses it again if it arrives anyway.

>>> from nodes.policy import Policy, PrivacyUnit
>>> p = Policy(site="oslo", privacy_unit=PrivacyUnit(max_tumours_per_patient=1),
...            fields=["sex", "egfr"], statistics=["count"])
>>> restrict_policy(p, {"egfr"}).fields
['sex']
>>> restrict_policy(p, set()) is p
True
"""

from __future__ import annotations

from collections.abc import Collection

from nodes.policy import Policy


def restrict_policy(policy: Policy, not_available: Collection[str]) -> Policy:
    """``policy`` without the fields the site's data do not have (the same object if none)."""
    dropped = set(not_available) & set(policy.fields)
    if not dropped:
        return policy
    return policy.model_copy(update={"fields": [f for f in policy.fields if f not in dropped]})
