"""``varde node init``: a partner hospital's node directory, from nothing, in one step.

Why this order: the enrollment token works once, so everything that can be
checked locally or without spending it is checked first (token shape, gateway
URL, CA file, data and mapping, the starter policy, that the gateway answers
over verified TLS). The directory is built in a temporary sibling and renamed
into place only after the gateway accepted the key, so a failure at any step
leaves no half-made node directory behind (and a directory that exists is never
overwritten: it may hold a ledger).

The layout is described in :mod:`nodes.config`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from nodes.config import CONFIG_NAME, SITE_PATTERN, NodeConfig
from nodes.enrollment import NodeIdentity, identity_path, register_key
from nodes.policy_check import check_policy_text
from nodes.transport import GatewayURLError, check_gateway_url, explain, gateway_client, tls_context
from varde.crypto import generate_key, key_fingerprint, public_key_b64, save_private_key

TOKEN_PATTERN = re.compile(r"^ve_[A-Za-z0-9_-]{16,200}$")
"""What ``varde admin enroll-token`` prints: ``ve_`` and a URL-safe secret."""


class InitError(ValueError):
    """``varde node init`` cannot go on; the message names the problem and the fix."""


@dataclass(frozen=True)
class InitRequest:
    """What the hospital's IT gives ``varde node init``."""

    gateway_url: str
    token: str
    directory: Path
    site: str | None = None
    data: Path | None = None
    mapping: Path | None = None
    ca_file: Path | None = None
    dev_network: bool = False


@dataclass(frozen=True)
class InitResult:
    """What was made: where, for which site, the key's fingerprint, the gateway's key."""

    directory: Path
    config: NodeConfig
    key_fingerprint: str
    gateway_key_fingerprint: str


STARTER_POLICY = """\
# Policy of site {site}: what may leave this hospital, for whom, at what privacy cost.
# Written by 'varde node init'. As written it DENIES EVERYTHING: no field can be read, no
# statistic computed and no project is served, so the node answers every question with a
# refusal until the registry's staff edit this file. The node checks it at start and on
# every save (unknown keys are errors); check an edit with:  varde policy check THIS_FILE
# The example sites' policies (policies/*.yaml in the source) show every key in use.
site: {site}
profile: production          # 'development' allows unsafe settings (tiny min_cell, huge epsilon)
contact: ""                  # whom researchers ask about budgets, e.g. "registry@hospital.example"

privacy_unit:
  # A patient may have several tumours (rows). The node keeps each patient's N earliest tumours
  # and derives every statistic's sensitivity from that bound.
  max_tumours_per_patient: 3

# Fields of the common schema ('varde schema') queries may read, e.g. [sex, age_band, stage].
# Identifiers (patient_id, tumour_id) can never be listed.
fields: []

# Statistics this site computes, from: count, sum, mean, histogram, crosstab, funnel,
# quantile, survival.
statistics: []

# Projects this site serves, each with its lifetime privacy budget here. None until staff agree.
projects: {{}}
#  nsclc-feasibility:         # the project's name at the gateway
#    epsilon_budget: 5.0      # lifetime epsilon it may spend here
#    max_epsilon_per_query: 0.5
#    researchers: [alice]     # optional: only these researchers (absent: every member)
#    training: [logistic]     # federated models it may train here (absent: none)

# Non-DP aggregate counts (suppression and perturbation instead of DP). Off.
# aggregate:
#   allowed: true
#   min_cell: 10              # cells under 10 patients are suppressed
#   cell_key_spread: 2        # counts published within +-2

# Work that waits for a decision of the registry's staff (varde node approve/deny).
# approvals:
#   new_projects: true        # a project's first request waits until staff approve it
#   epsilon_above: 0.5        # a query asking for more epsilon waits for its own approval
"""


def starter_policy_text(site: str) -> str:
    """The commented deny-all policy ``init`` writes (it passes ``varde policy check``)."""
    return STARTER_POLICY.format(site=site)


def starter_mapping(site: str) -> str:
    """The commented starter mapping of :mod:`nodes.mapping` for ``site``."""
    from nodes.mapping import starter_mapping_text

    return starter_mapping_text(site)


def _site_of(req: InitRequest) -> str:
    """``--site``, or the site named in ``--mapping``; it must be a name the gateway enrolls."""
    site = req.site
    if site is None and req.mapping is not None:
        site = _mapping_site(req.mapping)
    if site is None:
        raise InitError("give --site NAME: the site name the gateway operator made the token for")
    if not re.match(SITE_PATTERN, site):
        raise InitError(
            f"site name {site!r} must be lower case letters, digits, '-' or '_', starting "
            "with a letter, 2 to 41 characters (as the gateway operator wrote it)"
        )
    return site


def _mapping_site(path: Path) -> str:
    from nodes.mapping import MappingError, load_mapping

    try:
        return load_mapping(path).site
    except (MappingError, OSError) as err:
        raise InitError(f"--mapping {path}: {err}") from err


def check_token(token: str) -> None:
    """A malformed token is refused before anything is sent."""
    if not TOKEN_PATTERN.match(token.strip()):
        raise InitError(
            "--token is not an enrollment token (it looks like ve_ followed by about 43 "
            "letters, digits, '-' and '_'): copy it exactly as 'varde admin enroll-token' "
            "printed it"
        )


def check_target(directory: Path) -> None:
    """The node directory must not exist yet (or be empty): init never overwrites a node."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise InitError(
            f"{directory} already exists and is not empty (it may hold a node's key and "
            "ledger, which init never overwrites): choose another --dir"
        )
    parent = directory.resolve().parent
    if not parent.is_dir():
        raise InitError(f"{parent} does not exist: create it, or choose another --dir")
    if not os.access(parent, os.W_OK):
        raise InitError(f"cannot write in {parent}: choose another --dir")


def check_data(site: str, data: Path | None, mapping: Path | None) -> None:
    """Data and mapping are readable and pass the hard checks (as ``varde node check-data``)."""
    if data is not None and not data.is_file():
        raise InitError(f"--data {data} does not exist or is not a file")
    if mapping is not None:
        from nodes.mapping import MappingError, load_mapping
        from nodes.mapping.check import check_data as check_mapped

        try:
            loaded = load_mapping(mapping)
        except (MappingError, OSError) as err:
            raise InitError(f"--mapping {mapping}: {err}") from err
        if loaded.site != site:
            raise InitError(
                f"--mapping {mapping} is for site {loaded.site!r}, not {site!r}: fix its site:"
            )
        report = check_mapped(mapping, data)
        if report.verdict == "fail":
            raise InitError(
                f"the data do not pass the checks (fix them or the mapping, then run init "
                f"again; 'varde node check-data --mapping {mapping}' shows the same):\n"
                + report.render()
            )
    elif data is not None:
        from nodes.mapping.check import check_registry_frame
        from nodes.registry_io import read_registry

        try:
            frame = read_registry(data)
        except (ValueError, OSError) as err:
            raise InitError(
                f"cannot read --data {data}: {err} (a .parquet or .csv file in the common "
                "schema; raw hospital tables need a --mapping)"
            ) from err
        report = check_registry_frame(frame, site=site, source=str(data))
        if report.verdict == "fail":
            raise InitError(f"--data {data} fails the hard checks:\n{report.render()}")


def check_gateway(req: InitRequest) -> None:
    """The gateway answers ``/healthz`` over (verified) TLS: nothing spent yet."""
    check_gateway_health(req.gateway_url, ca_file=req.ca_file, dev_network=req.dev_network)


def check_gateway_health(
    gateway_url: str, *, ca_file: Path | None = None, dev_network: bool = False
) -> None:
    """:func:`check_gateway` for a URL (also before ``varde node rotate-key`` spends a token)."""
    url = gateway_url.rstrip("/")
    try:
        with gateway_client(url, ca_file=ca_file, dev_network=dev_network) as client:
            resp = client.get(f"{url}/healthz")
    except httpx.HTTPError as err:
        raise InitError(explain(err, url, ca_file)) from err
    try:
        ok = resp.status_code == 200 and resp.json().get("status") == "ok"
    except ValueError:
        ok = False
    if not ok:
        raise InitError(
            f"{url} answered /healthz with HTTP {resp.status_code}, not as a Varde gateway: "
            "check the URL (scheme, host, port, no path)"
        )


def _write_directory(root: Path, req: InitRequest, site: str) -> tuple[NodeConfig, str]:
    """Everything but the identity, in ``root``; returns the config and the public key."""
    keys = root / "keys"
    keys.mkdir(mode=0o700)
    keys.chmod(0o700)  # whatever the umask
    key = generate_key()
    save_private_key(key, keys / "node_key.pem")  # 0600
    (root / "policies").mkdir()
    policy_text = starter_policy_text(site)
    checked = check_policy_text(policy_text, source="starter policy", site=site)
    if not checked.ok:  # a defect of this module, never of the user's input
        raise RuntimeError(checked.explain())
    (root / "policies" / f"{site}.yaml").write_text(policy_text)
    (root / "mapping.yaml").write_text(starter_mapping(site))
    state = root / "state"
    state.mkdir(mode=0o700)
    config = NodeConfig(
        site=site,
        gateway_url=req.gateway_url.rstrip("/"),
        policy=Path("policies") / f"{site}.yaml",
        mapping=req.mapping.resolve() if req.mapping else None,
        data=req.data.resolve() if req.data else None,
        state_dir=Path("state"),
        ca_file=req.ca_file.resolve() if req.ca_file else None,
        dev_network=req.dev_network,
    )
    (root / CONFIG_NAME).write_text(config.to_yaml())
    return config, public_key_b64(key)


def init_node(req: InitRequest) -> InitResult:
    """Make the node directory and enroll it; raises :class:`InitError` with the fix.

    Raises before the token is spent for anything that can be checked first;
    after a refusal by the gateway nothing is left on disk either.
    """
    check_token(req.token)
    try:
        check_gateway_url(req.gateway_url, req.dev_network)
        tls_context(req.ca_file)
    except GatewayURLError as err:
        raise InitError(str(err)) from err
    site = _site_of(req)
    check_target(req.directory)
    check_data(site, req.data, req.mapping)
    check_gateway(req)
    target = req.directory.resolve()
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.init-", dir=target.parent))
    enrolled = False
    try:
        building.chmod(0o750)
        config, public_key = _write_directory(building, req, site)
        try:
            gateway_key = register_key(
                config.gateway_url,
                req.token.strip(),
                site,
                public_key,
                ca_file=req.ca_file,
                dev_network=req.dev_network,
            )
        except ConnectionError as err:
            raise InitError(f"{err} (the token was not used: run init again)") from err
        except Exception as err:  # AuthenticationFailed and kin: the gateway's reason + fix
            raise InitError(str(err)) from err
        enrolled = True
        ident = NodeIdentity(
            site=site, gateway_url=config.gateway_url, gateway_public_key=gateway_key
        )
        identity_path(building / "state").write_text(ident.model_dump_json(indent=2))
        if target.exists():
            target.rmdir()  # checked empty above
        building.rename(target)
    except BaseException as err:
        if enrolled:  # the key is registered: keep it, say where it is
            raise InitError(
                f"the gateway accepted this node's key, but {building} could not be moved to "
                f"{target} ({err}): move it there by hand (it is the complete node directory)"
            ) from err
        shutil.rmtree(building, ignore_errors=True)
        raise
    return InitResult(
        directory=target,
        config=config,
        key_fingerprint=key_fingerprint(public_key),
        gateway_key_fingerprint=key_fingerprint(gateway_key),
    )
