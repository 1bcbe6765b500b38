"""Hot reload of a node's policy file: new terms take effect without a restart, or not at all.

Why a watcher in the node: ``policies/<site>.yaml`` is the source of truth, and
staff edit it while researchers are querying. A small thread re-reads the file
every :attr:`PolicyReloader.interval` seconds and compares its *content* hash
(a modification time can stay the same across two quick writes on a coarse
file system; reading a few hundred bytes is cheaper than being wrong).

* A valid new policy is put in force with :meth:`NodeContext.set_policy`, which
  swaps one reference under a lock: a query in flight finishes under the
  policy it read, the next one reads the new one. The ledger is never touched
  (it stores what was spent; totals come from the policy at each charge), so
  no charge is lost or repeated. The change and its diff are audited.
* An invalid file is refused: the old policy stays in force and the refusal
  (with every problem and its line) is audited and logged.
* A policy that *lowers* ``privacy_unit.max_tumours_per_patient`` below the
  bound the data in memory was prepared with is refused too: noise calibrated
  for a smaller bound would under-protect. That change needs a restart (which
  reloads the data); a higher bound is safe (more noise) and applies at once.
* A deleted file means deny-all, as at start: a missing policy denies everything.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Literal

from nodes.context import NodeContext
from nodes.policy import Policy
from nodes.policy_check import check_policy_text
from nodes.policy_diff import diff_policies

log = logging.getLogger("varde.node.reload")

Outcome = Literal["unchanged", "reloaded", "refused", "denied"]


class PolicyReloader:
    """Watches one policy file and keeps ``ctx``'s policy in step with it.

    Args:
        ctx: The running node's context.
        path: The policy file the node was started with.
        interval: Seconds between checks.
    """

    def __init__(self, ctx: NodeContext, path: Path, *, interval: float = 0.5) -> None:
        self.ctx = ctx
        self.path = path
        self.interval = interval
        self._seen: bytes | None = self._read()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _read(self) -> bytes | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).digest()
        except FileNotFoundError:
            return None

    def record_start(self) -> None:
        """Audit the policy the node starts with (the first entry of the policy history)."""
        pol = self.ctx.policy
        self.ctx.store.audit(
            "policy_loaded",
            version=pol.version,
            path=str(self.path),
            text=self.path.read_text() if self.path.exists() else "",
            deny_all=not self.path.exists(),
        )

    def check_once(self) -> Outcome:
        """Compare the file with what was last seen and act on a change (thread-safe)."""
        with self._lock:  # the watcher and the console may both ask
            return self._check()

    def _check(self) -> Outcome:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = None
        except OSError as err:  # unreadable for now: keep what is in force
            log.warning("cannot read policy %s: %s", self.path, err)
            return "unchanged"
        digest = hashlib.sha256(raw).digest() if raw is not None else None
        if digest == self._seen:
            return "unchanged"
        self._seen = digest
        old = self.ctx.policy
        if raw is None:
            new = Policy.deny_all(self.ctx.site)
            self._put(old, new, text="", reason="policy file removed: deny everything")
            log.warning("policy %s removed: site %s now DENIES EVERYTHING", self.path, old.site)
            return "denied"
        text = raw.decode("utf-8", errors="replace")
        result = check_policy_text(text, source=str(self.path), site=self.ctx.site)
        problems = [str(p) for p in result.problems]
        if result.policy is not None:
            k_data = self.ctx.data.max_rows_per_patient
            k_new = result.policy.privacy_unit.max_tumours_per_patient
            if k_new < k_data:
                problems.append(
                    f"privacy_unit.max_tumours_per_patient {k_new} is below the bound of the data "
                    f"in memory ({k_data}); noise for {k_new} would under-protect: restart the "
                    "node to reload the data with the new bound"
                )
        if problems or result.policy is None:
            self.ctx.store.audit(
                "policy_refused",
                path=str(self.path),
                problems=problems,
                version_in_force=old.version,
                text=text,
            )
            log.error(
                "policy %s refused, version %s stays in force:\n  %s",
                self.path,
                old.version,
                "\n  ".join(problems),
            )
            return "refused"
        new = self.ctx.effective(result.policy)  # as it applies to the data loaded
        if new.version == old.version:
            return "unchanged"
        self._put(old, new, text=text, reason="policy file changed")
        log.info("policy %s -> %s in force", old.version, new.version)
        return "reloaded"

    def _put(self, old: Policy, new: Policy, *, text: str, reason: str) -> None:
        self.ctx.set_policy(new)
        self.ctx.store.audit(
            "policy_changed",
            reason=reason,
            old_version=old.version,
            version=new.version,
            changes=[str(c) for c in diff_policies(old, new)],
            text=text,
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check_once()
            except Exception:  # the watcher must never take the node down
                log.exception("policy reload check failed")

    def start(self) -> PolicyReloader:
        """Audit the starting policy and watch the file on a daemon thread."""
        self.record_start()
        self._thread = threading.Thread(target=self._run, name="varde-policy-reload", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (waits for a check in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
