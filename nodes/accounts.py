"""Where a project's charges go at this site, and the one way to pay: ledger first, then audit.

Why one module: queries, training rounds and the DP evaluation of a trained
model all spend the same project budget, in the project's own measure and
budget period. Each used to carry its own copy of "which account, how much is
left, charge it"; worse, training charges wrote no audit entry, so a
data-protection officer reading ``varde audit export`` could not see what
training spent. Now every charge goes through :meth:`Account.pay`, which
commits the ledger charge and then appends a ``charged`` entry to the site's
hash-chained audit trail naming what paid (query, training round, evaluation),
the amount in its measure, the period and the total spent after it.

The ledger and the audit trail are two SQLite files, so the two writes are not
one transaction: a crash between them would leave a charge without its entry.
:func:`reconcile` closes that gap; the node runs it at start-up, so every
charge in the ledger has its ``charged`` entry (marked ``recovered``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from nodes.ledger import Charge, Ledger
from nodes.periods import period_key, renews_on
from nodes.policy import ProjectPolicy
from nodes.store import NodeStore
from varde.budget import Budget
from varde.envelope import utcnow
from varde.errors import BudgetExhausted
from varde.terms import budget_help


@dataclass(frozen=True)
class Account:
    """One project's ledger account at this site now: its measure, budget and period."""

    project: str
    policy: ProjectPolicy
    period: str
    renews: dt.date | None = None
    """When the period's budget renews (None: a lifetime budget)."""
    site: str = ""
    contact: str = ""
    """Whom a researcher asks for more (the site policy's ``contact``)."""

    @classmethod
    def of(
        cls,
        project: str,
        policy: ProjectPolicy,
        now: dt.datetime | None = None,
        *,
        site: str = "",
        contact: str = "",
    ) -> Account:
        """The account ``project`` pays from at ``now`` (default: the current UTC time)."""
        at = now or utcnow()
        period = period_key(policy.budget_period, at)
        return cls(project, policy, period, renews_on(policy.budget_period, at), site, contact)

    @property
    def total(self) -> Budget:
        """The project's budget for the period, in its own measure."""
        return self.policy.budget

    @property
    def cap(self) -> Budget:
        """The most one query or training round may spend."""
        return self.policy.cap

    def left(self, ledger: Ledger) -> Budget:
        """What is left of the period's budget (zero, never negative)."""
        return ledger.remaining(self.project, self.total, self.period)

    def pay(
        self,
        ledger: Ledger,
        store: NodeStore,
        *,
        cost: Budget,
        query_id: str,
        what: str,
        note: str = "",
        **detail: Any,
    ) -> Charge:
        """Charge ``cost`` (committed, never refunded), then audit the charge.

        ``what`` says what paid (``query``, ``training round``, ``evaluation``);
        ``detail`` (job id, round, statistic, policy version...) goes into the
        ``charged`` audit entry with the amount, period and total spent after it.

        Raises:
            BudgetExhausted: What is left cannot pay ``cost`` (the message says when the
                budget renews and whom to ask); nothing changed.
            Conflict: ``query_id`` has already paid.
        """
        try:
            charge = ledger.charge(
                project=self.project,
                cost=cost,
                total=self.total,
                query_id=query_id,
                period=self.period,
                note=note,
            )
        except BudgetExhausted as err:
            site = self.site or "this site"
            raise BudgetExhausted(
                err.message + budget_help(site, self.renews, self.contact)
            ) from err
        audit_charge(store, charge, what=what, budget_total=self.total.amount, **detail)
        return charge


def audit_charge(store: NodeStore, charge: Charge, *, what: str, **detail: Any) -> None:
    """The ``charged`` audit entry of one committed ledger charge."""
    store.audit(
        "charged",
        query_id=charge.query_id,
        project=charge.project,
        what=what,
        measure=charge.measure,
        amount=charge.amount,
        period=charge.period,
        spent_after=charge.spent_after,
        **detail,
    )


def reconcile(ledger: Ledger, store: NodeStore) -> int:
    """Audit every ledger charge that has no ``charged`` entry yet; how many there were.

    A node that crashed between committing a charge and auditing it would
    otherwise keep an unaudited charge for ever. The entry is marked
    ``recovered`` and carries the ledger's own note.
    """
    audited = {e.query_id for e in store.events("charged")}
    missing = [c for c in ledger.charges() if c.query_id not in audited]
    for charge in missing:
        audit_charge(store, charge, what="recovered", recovered=True, note=charge.note)
    return len(missing)
