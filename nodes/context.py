"""Everything a node needs to answer work: its data, policy, ledger, keys, store and cache.

One object shared by the poll loop's worker threads, the policy reloader, the
console and the SuperNode watcher. The policy is swapped atomically on reload;
each work item takes one snapshot of it (:class:`nodes.pipeline.WorkState`).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nodes.accounts import Account
from nodes.data import RegistryData
from nodes.ledger import Ledger
from nodes.mapping.availability import restrict_policy
from nodes.policy import Policy, ProjectPolicy
from nodes.release_cache import ReleaseCache, data_digest
from nodes.statistics.cellkey import secret_salt
from nodes.store import NodeStore
from varde.budget import Budget
from varde.envelope import utcnow


@dataclass
class NodeContext:
    """Everything a node needs to answer: its data, policy, ledger, keys and store."""

    site: str
    data: RegistryData
    ledger: Ledger
    store: NodeStore
    node_key: Ed25519PrivateKey
    gateway_key: str
    _policy: Policy
    _lock: threading.Lock = field(default_factory=threading.Lock)
    generation: int = 0
    """Bumped on every charge and policy change, so the manifest is rebuilt only then."""
    _cache: ReleaseCache | None = None
    _data_version: str = ""
    clock: Callable[[], dt.datetime] = utcnow
    """Time for budget periods (a test can move it; envelope expiry has its own ``now``)."""

    def __post_init__(self) -> None:
        # Create the cache's table now, before worker threads race to (SQLite refuses a
        # lock upgrade inside a read transaction, so concurrent first-use DDL fails).
        self._cache = ReleaseCache(self.store.engine, self.store.write_engine)
        self._policy = self.effective(self._policy)

    @property
    def release_cache(self) -> ReleaseCache:
        """The repeat-query cache, in the store's database."""
        assert self._cache is not None
        return self._cache

    @property
    def data_version(self) -> str:
        """A digest of the loaded data: new data means a repeat is a new question."""
        with self._lock:
            if not self._data_version:
                self._data_version = data_digest(self.data)
            return self._data_version

    @property
    def cell_key_salt(self) -> int:
        """The secret behind aggregate mode's record keys (from the node's private key)."""
        raw = self.node_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return secret_salt(raw)

    @property
    def policy(self) -> Policy:
        """The policy in force (swapped atomically on reload)."""
        with self._lock:
            return self._policy

    def effective(self, policy: Policy) -> Policy:
        """``policy`` as it applies to these data: fields the site lacks are not exposed."""
        return restrict_policy(policy, self.data.not_available)

    def set_policy(self, policy: Policy) -> None:
        """Put a validated policy in force (as :meth:`effective`); the ledger is untouched."""
        policy = self.effective(policy)
        with self._lock:
            self._policy = policy
            self.generation += 1

    def charged(self) -> None:
        """Note that the ledger changed (the published budgets are stale)."""
        with self._lock:
            self.generation += 1

    def account(self, name: str, project: ProjectPolicy) -> Account:
        """The ledger account ``name`` pays from now (its measure and budget period)."""
        pol = self.policy
        return Account.of(name, project, self.clock(), site=self.site, contact=pol.contact)

    def remaining(self, policy: Policy | None = None) -> dict[str, Budget]:
        """Budget left per project in its own measure (current period), for the manifest."""
        pol = policy or self.policy
        return {name: self.account(name, p).left(self.ledger) for name, p in pol.projects.items()}
