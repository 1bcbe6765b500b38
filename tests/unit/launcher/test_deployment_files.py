"""The deployment files (compose.yaml, Dockerfile, .dockerignore, deploy/) checked without a
container engine: compose.yaml against the compose-spec JSON schema (vendored in tests/data),
``docker compose config`` where a Compose plugin exists, every service's command parsed by the
real ``varde`` command line (or Flower's own parser) with the service's environment, the
Dockerfile parsed with the official parser (the ``dockerfile`` package) for its user, entry
point, pinned base and baked-in secrets, and the systemd unit by ``systemd-analyze verify``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import dockerfile
import jsonschema
import pytest
import typer
import yaml

from launcher.cli import app

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "compose.yaml"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
SITES = sorted(p.stem for p in (ROOT / "policies").glob("*.yaml"))
UNIT = ROOT / "deploy" / "varde-node.service"
TEST_ENV = {"VARDE_POSTGRES_PASSWORD": "test-password"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())  # resolves the <<: merge keys as Compose does
    assert isinstance(doc, dict)
    return doc


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}`` / ``${VAR:?message}`` / ``${VAR:-default}`` for the test's env."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in env and env[name]:
            return env[name]
        if op == ":-":
            return arg or ""
        raise AssertionError(f"${{{name}}} is required: {arg}")

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:\?|:-)([^}]*))?\}", one, value)


def varde_context(args: list[str]) -> click.Context:
    """Parse ``varde ARGS`` down to its leaf command (types, ranges, files) without running it."""
    command = typer.main.get_command(app)
    ctx = command.make_context("varde", list(args))
    while isinstance(command, click.Group):
        name, sub, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        assert sub is not None and name is not None
        ctx = sub.make_context(name, rest, parent=ctx)
        command = sub
    return ctx


def test_varde_context_rejects_what_the_cli_rejects(tmp_path: Path) -> None:
    assert varde_context(["gateway", "serve", "--port=8700"]).params["port"] == 8700
    with pytest.raises(click.UsageError, match="No such option"):
        varde_context(["gateway", "serve", "--bogus"])
    with pytest.raises(click.BadParameter):
        varde_context(["gateway", "serve", f"--tls-cert={tmp_path / 'missing.pem'}"])


# --- compose.yaml -------------------------------------------------------------------------


def test_compose_validates_against_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    # the validator does catch a wrong file: an unknown service key and a bad restart value
    broken = json.loads(json.dumps(compose))
    broken["services"]["gateway"]["restrat"] = "always"
    broken["services"]["node-oslo"]["volumes"][0]["type"] = "folder"
    assert len(list(validator.iter_errors(broken))) == 2


def test_docker_compose_config_where_available() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI on this machine")
    version = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    if version.returncode != 0:
        pytest.skip(f"docker has no compose plugin here: {version.stderr.strip().splitlines()[0]}")
    out = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        env={**os.environ, **TEST_ENV},
        check=False,
    )
    assert out.returncode == 0, out.stderr


def test_compose_has_the_services_the_design_names(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"gateway", "postgres", "superlink"} <= set(services)
    assert {f"node-{site}" for site in SITES} <= set(services), "one node service per demo site"
    assert SITES == ["bergen", "oslo", "trondheim"]


def test_varde_services_run_unprivileged(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if name == "postgres":  # the official image drops to its own postgres user
            continue
        uid = str(svc.get("user", "")).split(":")[0]
        assert uid.isdigit() and int(uid) >= 1000, f"{name} runs as {svc.get('user')!r}"
        assert svc.get("read_only") is True, name
        assert svc.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        assert svc.get("image") == "varde:0.1.0" and svc["build"]["dockerfile"] == "Dockerfile"


def bind_mounts(svc: dict[str, Any]) -> list[dict[str, Any]]:
    mounts = []
    for vol in svc.get("volumes", []):
        if isinstance(vol, str):
            parts = vol.split(":")
            mounts.append(
                {"source": parts[0], "target": parts[1], "read_only": parts[2:] == ["ro"]}
            )
        else:
            mounts.append(vol)
    return mounts


@pytest.mark.parametrize("site", SITES)
def test_node_services_open_no_port_and_mount_read_only(compose: dict[str, Any], site: str) -> None:
    svc = compose["services"][f"node-{site}"]
    assert "ports" not in svc and "expose" not in svc, "a node connects out only"
    home = f"/var/lib/varde/nodes/{site}"
    mounts = {m["target"]: m for m in bind_mounts(svc)}
    writable = {t for t, m in mounts.items() if not m.get("read_only")}
    assert writable == {f"{home}/state"}, f"only the ledger/audit state is writable: {writable}"
    assert mounts[home]["source"] == f"./deploy/nodes/{site}"  # config, keys/, mapping.yaml
    assert mounts[f"{home}/policies/{site}.yaml"]["source"] == f"./policies/{site}.yaml"
    assert (ROOT / "policies" / f"{site}.yaml").is_file()
    assert mounts[f"/data/{site}"]["source"] == f"./deploy/data/{site}"
    assert mounts["/etc/varde/tls/ca.pem"]["read_only"] is True
    assert f"--config={home}/config.yaml" in svc["command"]


def test_only_the_gateway_publishes_a_port(compose: dict[str, Any]) -> None:
    published = {name for name, svc in compose["services"].items() if svc.get("ports")}
    assert published == {"gateway"}
    assert compose["services"]["gateway"]["ports"] == ["8700:8700"]


def test_no_secret_is_written_into_compose(compose: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    assert "BEGIN" not in text and not re.search(r"\bv[er]_[A-Za-z0-9_-]{8,}", text)
    pg = compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert pg.startswith("${VARDE_POSTGRES_PASSWORD:?"), "the password comes from the environment"
    for svc in compose["services"].values():
        for arg in svc.get("command", []):
            assert "password" not in str(arg).lower() and "token" not in str(arg).lower(), arg


def container_paths(args: list[str], root: Path) -> list[str]:
    """The service's arguments with container paths moved under ``root`` (files created)."""
    out = []
    for arg in args:
        flag, eq, value = arg.partition("=")
        if eq and value.startswith(("/etc/", "/var/", "/data/")):
            path = root / value.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            if flag == "--state-dir":
                path.mkdir(exist_ok=True)
            elif flag == "--dir":
                pass  # made by the command (node init refuses an existing one)
            else:
                path.touch()
            arg = f"{flag}={path}"
        out.append(arg)
    return out


@pytest.mark.parametrize("service", ["gateway", *(f"node-{site}" for site in SITES)])
def test_every_varde_service_command_parses(
    compose: dict[str, Any], service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = compose["services"][service]
    assert "entrypoint" not in svc, "the image's entry point is varde"
    for key, value in (svc.get("environment") or {}).items():
        monkeypatch.setenv(key, interpolate(str(value), TEST_ENV))
    ctx = varde_context(container_paths(list(svc["command"]), tmp_path))
    if service == "gateway":
        params = ctx.params
        assert params["database_url"] == (
            "postgresql+psycopg://varde:test-password@postgres:5432/varde"
        ), "VARDE_DATABASE_URL reaches --database-url"
        assert params["tls_cert"] and params["tls_key"], "the gateway serves HTTPS"
        assert params["host"] == "0.0.0.0" and not params["dev_network"]
        assert params["flower_superlink"] == "superlink:9092"
        from gateway.cli import check_listen_tls

        check_listen_tls(params["host"], params["tls_cert"], params["tls_key"], dev_network=False)
    else:
        assert ctx.params["config"] is not None
        assert ctx.params["flower_root_certificates"] is not None, "TLS to the SuperLink"
        assert not ctx.params["flower_insecure"] and not ctx.params["dev_network"]


def test_node_init_as_compose_yaml_documents_it_parses(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """The one-off ``docker compose run --rm node-init node init ...`` of the file's header."""
    header = "".join(
        line[1:].strip() + " " for line in COMPOSE.read_text().splitlines() if line.startswith("#")
    ).replace("\\ ", "")
    found = re.search(r"docker compose run --rm node-init (node init .*?\.parquet)", header)
    assert found is not None
    args = found.group(1).replace("<site>", "oslo").replace("<enrollment token>", "ve_x")
    parsed = shlex.split(args)
    ctx = varde_context(container_paths(parsed, tmp_path))
    assert ctx.command_path == "varde node init"
    assert ctx.params["gateway"] == "https://gateway:8700" and ctx.params["site"] == "oslo"
    # the paths it writes are the ones the node services mount
    node_dir = ctx.params["directory"]
    assert str(node_dir).endswith("/var/lib/varde/nodes/oslo")
    mounts = {m["target"]: m for m in bind_mounts(compose["services"]["node-init"])}
    assert not mounts["/var/lib/varde/nodes"].get("read_only"), "init writes the node directory"
    assert mounts["/data"]["read_only"] is True
    assert "--data=/data/oslo/oslo.parquet" in parsed


def test_superlink_command_parses_with_flowers_own_parser(compose: dict[str, Any]) -> None:
    from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink

    svc = compose["services"]["superlink"]
    assert svc["entrypoint"] == ["flower-superlink"]
    args = _parse_args_run_superlink().parse_args(svc["command"])
    assert not args.insecure and args.ssl_certfile and args.ssl_keyfile and args.ssl_ca_certfile
    assert args.port == 9092
    assert shutil.which("flower-superlink", path=str(Path(sys.executable).parent))


# --- Dockerfile and .dockerignore -----------------------------------------------------------


@pytest.fixture(scope="module")
def instructions() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(ROOT / "Dockerfile")))


def final_stage(instructions: list[dockerfile.Command]) -> list[dockerfile.Command]:
    starts = [i for i, c in enumerate(instructions) if c.cmd == "FROM"]
    return instructions[starts[-1] :]


def test_dockerfile_is_multi_stage_from_a_pinned_base(
    instructions: list[dockerfile.Command],
) -> None:
    froms = [c for c in instructions if c.cmd == "FROM"]
    assert len(froms) >= 2, "multi-stage: the final image gets no build stage"
    args = dict(
        c.value[0].split("=", 1) for c in instructions if c.cmd == "ARG" and "=" in c.value[0]
    )
    for c in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], c.value[0])
        name, _, tag = image.partition(":")
        assert "@sha256:" in image or re.match(r"\d+\.\d+\.\d+-", tag), f"unpinned {image}"
        assert "latest" not in tag


def test_dockerfile_final_stage_runs_varde_unprivileged(
    instructions: list[dockerfile.Command],
) -> None:
    final = final_stage(instructions)
    users = [c.value[0] for c in final if c.cmd == "USER"]
    assert users, "the final stage sets a USER"
    uid = users[-1].split(":")[0]
    assert uid not in {"0", "root"} and (not uid.isdigit() or int(uid) >= 1000), users[-1]
    entry = [c for c in final if c.cmd == "ENTRYPOINT"]
    assert entry and entry[-1].json and entry[-1].value == ("varde",)
    # the entry point is the console script the wheel installs
    scripts = (ROOT / "pyproject.toml").read_text()
    assert 'varde = "launcher.cli:main"' in scripts


def test_dockerfile_final_stage_has_no_build_tools(instructions: list[dockerfile.Command]) -> None:
    final = final_stage(instructions)
    runs = " ".join(" ".join(c.value) for c in final if c.cmd == "RUN")
    for tool in ("apt-get install", "gcc", "build-essential", "pip install", "make "):
        assert tool not in runs, tool
    assert "pip uninstall --yes pip" in runs
    copies = [c for c in final if c.cmd == "COPY"]
    assert all(c.flags == ("--from=build",) for c in copies), "only the built environment"


def test_dockerfile_bakes_in_no_secret(instructions: list[dockerfile.Command]) -> None:
    secret = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|_KEY|KEY_|APIKEY", re.IGNORECASE)
    for c in instructions:
        if c.cmd in {"ENV", "ARG"}:
            names = c.value[::2] if c.cmd == "ENV" else [v.split("=")[0] for v in c.value]
            assert not any(secret.search(n) for n in names), c.original
        if c.cmd in {"COPY", "ADD"}:
            for src in c.value[:-1]:
                assert not re.search(r"keys?|\.pem|\.env|tls|state|secret", src), c.original
        assert "BEGIN" not in c.original
    assert not any(c.cmd == "ADD" for c in instructions), "COPY only: no remote fetches"


def test_dockerignore_lets_in_only_what_the_build_copies(
    instructions: list[dockerfile.Command],
) -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**", "everything is excluded unless listed"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        src.rstrip("/")
        for c in instructions
        if c.cmd == "COPY" and not c.flags
        for src in c.value[:-1]
    }
    assert copied == allowed, (copied, allowed)
    assert all((ROOT / src).exists() for src in copied)
    for secret in ("**/*.pem", "**/*.key", "**/.env"):
        assert secret in lines


# --- systemd unit -----------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_restarts_unprivileged_with_a_state_directory(tmp_path: Path) -> None:
    s = unit_settings()
    assert s["Restart"] == ["on-failure"]
    assert s["User"] == ["varde"] and s["User"] != ["root"]
    assert s["StateDirectory"] == ["varde-node"] and s["StateDirectoryMode"] == ["0700"]
    for hardening in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices"):
        assert s[hardening] == ["yes"], hardening
    assert s["ProtectSystem"] == ["strict"] and s["CapabilityBoundingSet"] == [""]
    exe, *args = s["ExecStart"][0].split()
    assert exe == "/opt/varde/bin/varde"
    config = tmp_path / "config.yaml"
    config.touch()
    assert args[-2:] == ["--config", "/var/lib/varde-node/config.yaml"]
    assert Path(varde_context([*args[:-1], str(config)]).params["config"]) == config


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    varde = Path(sys.executable).with_name("varde")
    unit = tmp_path / "varde-node.service"
    unit.write_text(UNIT.read_text().replace("/opt/varde/bin/varde", str(varde)))
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stderr
    # and it does complain about a broken unit
    unit.write_text(unit.read_text().replace("Restart=on-failure", "Restart=sometimes"))
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert "restart" in out.stderr.lower()
