"""docker/: the compose file is consistent with the repository and the CLI, avoids the traps a
first user meets (each checked here by its structure), and the image's entry command and
healthcheck work, run on the host exactly as the image runs them.

No image is built here: tests/docker/test_stack.py builds it and runs the whole stack. When
``docker compose`` (v2) or ``docker-compose`` (v1.29) exists it also validates the file
(``config -q``); the structural checks below always run, on a small YAML-subset parser (PyYAML is
not a dependency) cross-checked against PyYAML when installed.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from collab.keys import Keypair
from relay.core.config import Config
from relay.ops.cli import build_parser, resolve_settings
from relay.ops.cli_settings import _config_of
from tests.procs import start_relay_proc

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yml"
DOCKERFILE = DOCKER / "Dockerfile"
COLONY_IMAGE = "colony:local"


# --- a YAML subset: block mappings, block sequences of scalars, plain/quoted scalars ------------


def _scalar(text: str) -> Any:
    if text.startswith('"'):
        return json.loads(text)
    if text.startswith("'"):
        assert text.endswith("'"), text
        return text[1:-1].replace("''", "'")
    if text in ("true", "false"):
        return text == "true"
    assert not text.startswith(("{", "[", "&", "*", "|", ">", "!")), f"outside the YAML subset: {text!r}"
    return text


def _block(lines: list[tuple[int, str]], i: int, indent: int) -> tuple[Any, int]:
    if lines[i][1].startswith("- ") or lines[i][1] == "-":
        seq: list[Any] = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("-"):
            item = lines[i][1][1:].strip()
            assert item and not re.match(r"^[\w.-]+:(\s|$)", item), f"outside the YAML subset: {lines[i][1]!r}"
            seq.append(_scalar(item))
            i += 1
        return seq, i
    mapping: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent:
        key, sep, rest = lines[i][1].partition(":")
        assert sep and re.fullmatch(r"[\w.-]+", key) and key not in mapping, f"bad mapping line {lines[i][1]!r}"
        rest = rest.strip()
        i += 1
        if rest:
            mapping[key] = _scalar(rest)
        elif i < len(lines) and lines[i][0] > indent:
            mapping[key], i = _block(lines, i, lines[i][0])
        else:
            mapping[key] = None
    assert i >= len(lines) or lines[i][0] < indent, f"bad indentation at {lines[i][1]!r}"
    return mapping, i


def parse_yaml_subset(text: str) -> Any:
    lines = [(len(raw) - len(raw.lstrip(" ")), raw.strip()) for raw in text.splitlines()
             if raw.strip() and not raw.lstrip().startswith("#")]
    assert all("\t" not in raw for _, raw in lines)
    value, i = _block(lines, 0, lines[0][0])
    assert i == len(lines)
    return value


def _leaves_as_text(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _leaves_as_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_leaves_as_text(v) for v in value]
    return value if value is None else str(value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = parse_yaml_subset(COMPOSE.read_text())
    try:
        import yaml
    except ImportError:
        pass
    else:  # the subset parser reads the file the way a YAML parser does
        assert _leaves_as_text(doc) == _leaves_as_text(yaml.safe_load(COMPOSE.read_text()))
    return doc


def _compose_programs() -> list[list[str]]:
    """The Compose implementations installed: v2 (``docker compose``) and v1 (``docker-compose``)."""
    out = []
    for program in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(program[0]) is None:
            continue
        try:
            if subprocess.run([*program, "version"], capture_output=True, timeout=30, check=False).returncode == 0:
                out.append(program)
        except (OSError, subprocess.TimeoutExpired):
            pass
    return out


def test_compose_config_validates(compose: dict[str, Any]) -> None:
    """``config -q`` with every Compose installed (v1.29 refuses what v2 accepts, e.g. a top-level
    ``name:``); the file must parse as the YAML subset compose files use either way."""
    for program in _compose_programs():
        res = subprocess.run([*program, "-f", str(COMPOSE), "config", "-q"], capture_output=True,
                             text=True, timeout=60, cwd=ROOT, check=False)
        assert res.returncode == 0, f"{' '.join(program)}: {res.stderr}"
    assert set(compose) <= {"services", "volumes", "networks"}, "docker-compose 1.29 knows no other top-level key"
    assert isinstance(compose.get("services"), dict) and compose["services"]
    assert all(isinstance(v, dict) and ("image" in v or "build" in v) for v in compose["services"].values())


def test_compose_references_exist(compose: dict[str, Any]) -> None:
    services: dict[str, Any] = compose["services"]
    assert {"keys", "redis", "relay-a", "relay-b", "relay-c", "demo"} <= set(services)
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if "build" in svc:  # every build is the repository's Dockerfile, from the repository root
            context = (DOCKER / svc["build"]["context"]).resolve()
            assert context == ROOT and (context / svc["build"]["dockerfile"]).is_file(), name
        if "build" in svc:
            assert svc.get("image") == COLONY_IMAGE, name
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert cond["condition"] in ("service_healthy", "service_completed_successfully"), (name, dep)
            if cond["condition"] == "service_healthy":
                dep_svc = services[dep]
                has_check = dep_svc.get("image") == COLONY_IMAGE or "test" in (dep_svc.get("healthcheck") or {})
                assert has_check and not (dep_svc.get("healthcheck") or {}).get("disable"), (name, dep)
        for vol in svc.get("volumes") or []:
            source = vol.split(":", 1)[0]
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source} is not declared"
    # colony:local is built by one service, the one every other colony service waits for (so `up`
    # builds it once and never tries to pull it)
    builders = [name for name, svc in services.items() if "build" in svc]
    assert builders == ["keys"], builders
    assert all(svc.get("image") == COLONY_IMAGE for name, svc in services.items() if name != "redis")
    ports = {name: svc.get("ports") for name, svc in services.items()}
    assert ports["relay-a"] == ["8701:8765"] and ports["relay-b"] == ["8702:8765"]
    for relay in ("relay-a", "relay-b", "relay-c"):
        deps = services[relay]["depends_on"]
        assert deps["keys"]["condition"] == "service_completed_successfully"
        assert relay == "relay-c" or deps["redis"]["condition"] == "service_healthy"
    assert all(services["demo"]["depends_on"][r]["condition"] == "service_healthy"
               for r in ("relay-a", "relay-b", "relay-c"))


def _shell_of(svc: dict[str, Any]) -> str | None:
    if svc.get("entrypoint") == ["sh", "-c"]:
        (script,) = svc["command"]
        return script.replace("$$", "$")
    return None


def _colony_invocations(svc: dict[str, Any]) -> list[list[str]]:
    script = _shell_of(svc)
    if script is None:
        return [["colony", *svc["command"]]]
    subs = re.findall(r"\$\(([^()]*)\)", script)
    main = re.sub(r"\$\([^()]*\)", "X", script)
    out = []
    for part in [*subs, *re.split(r"&&|;|\|\|", main)]:
        words = shlex.split(part)
        if words and words[0] == "exec":
            words = words[1:]
        assert words and words[0] == "colony", f"only colony runs in the colony image: {part!r}"
        out.append(words)
    return out


def _host_colony() -> list[str]:
    return [sys.executable, "-m", "relay.ops.cli"]


def test_compose_colony_commands_and_flags_exist(compose: dict[str, Any]) -> None:
    helps: dict[str, str] = {}
    seen_subs = set()
    for name, svc in compose["services"].items():
        if svc.get("image") != COLONY_IMAGE:
            continue
        for words in _colony_invocations(svc):
            sub = words[1]
            seen_subs.add(sub)
            if sub not in helps:
                res = subprocess.run([*_host_colony(), sub, "--help"], capture_output=True, text=True, cwd=ROOT,
                                     timeout=60, check=False)
                assert res.returncode == 0, f"colony {sub} --help: {res.stderr}"
                helps[sub] = res.stdout
            for flag in (w.split("=", 1)[0] for w in words[2:] if w.startswith("--")):
                assert re.search(rf"(^|[\s,\[]){re.escape(flag)}\b", helps[sub]), f"{name}: colony {sub} {flag}"
    assert {"serve", "pubkey", "demo"} <= seen_subs


def test_compose_shell_commands_resolve_keys_into_valid_serve_settings(compose: dict[str, Any],
                                                                       tmp_path: Path) -> None:
    """Run the keys service's script on the host (with /keys in tmp), then each relay's script with
    ``colony serve`` stubbed to print its arguments: they parse into a valid relay config."""
    services = compose["services"]
    keys_dir = tmp_path / "keys"
    colony_fn = (f"colony() {{ if [ \"$1\" = serve ]; then shift; {shlex.quote(sys.executable)} -c "
                 "'import json, sys; print(json.dumps(sys.argv[1:]))' \"$@\"; else "
                 f"{shlex.join(_host_colony())} \"$@\"; fi; }}; ")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(script: str) -> str:
        script = script.replace("/keys/", f"{keys_dir}/").replace("exec colony", "colony")
        res = subprocess.run(["sh", "-c", colony_fn + script], capture_output=True, text=True, env=env, timeout=60,
                             cwd=ROOT, check=False)
        assert res.returncode == 0, res.stderr
        return res.stdout

    out = run(_shell_of(services["keys"]) or "")
    keys = {name: Keypair.load(keys_dir / f"{name}.key").public_hex for name in ("site", "edge", "operator")}
    assert out.split() == [keys["site"], keys["edge"], keys["operator"]]
    assert run(_shell_of(services["keys"]) or "").split() == out.split()  # idempotent on restart
    parser = build_parser()
    configs = {}
    image_env = _dockerfile_env()
    for relay in ("relay-a", "relay-b", "relay-c"):
        argv = json.loads(run(_shell_of(services[relay]) or ""))
        # the image's ENV supplies what the command leaves out (COLONY_HOST, COLONY_PORT, COLONY_DATA)
        configs[relay] = _config_of(resolve_settings(parser.parse_args(["serve", *argv]), image_env))
    for relay, cfg in configs.items():
        assert cfg.operators == (keys["operator"],), relay
        assert cfg.public_url == f"http://{relay}:8765"
        assert cfg.port == 8765 and cfg.host == "0.0.0.0" and str(cfg.data_dir) == "/data"
    aliases = {r: (services[r].get("networks") or {}).get("default", {}).get("aliases") for r in configs}
    for relay in ("relay-a", "relay-b"):  # one site: same Redis, same key, federated with the edge
        assert configs[relay].redis_url == "redis://redis:6379/0"
        assert str(configs[relay].relay_key_file) == f"{keys_dir}/site.key"
        assert configs[relay].peers == (f"http://relay-c:8765#{keys['edge']}",)
        assert aliases[relay] == ["site"], relay  # the name the edge reaches both site processes by
    assert configs["relay-c"].redis_url is None and str(configs["relay-c"].relay_key_file) == f"{keys_dir}/edge.key"
    assert configs["relay-c"].peers == (f"http://site:8765#{keys['site']}",) and not aliases["relay-c"]
    assert len({cfg.pins for cfg in configs.values()}) == 1  # every member routes alike
    assert len({cfg.replicate for cfg in configs.values()}) == 1
    demo = services["demo"]["command"]
    relays = [demo[i + 1] for i, w in enumerate(demo) if w == "--relay"]
    assert relays == [f"http://{r}:8765" for r in ("relay-a", "relay-b", "relay-c")]
    # the banner names what a person opens: each relay's published host port, in --relay order
    shown = [demo[i + 1] for i, w in enumerate(demo) if w == "--show-url"]
    published = [services[r]["ports"][0].split(":")[0] for r in ("relay-a", "relay-b", "relay-c")]
    assert published == ["8701", "8702", "8703"]
    assert shown == [f"http://localhost:{p}" for p in published]
    assert demo[demo.index("--operator-key") + 1] == "/keys/operator.key"


def _seconds(text: str) -> float:
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", text)
    assert m and text, f"not a compose duration: {text!r}"
    return int(m.group(1) or 0) * 60 + float(m.group(2) or 0)


def test_compose_traps(compose: dict[str, Any]) -> None:
    """What a first user meets: durable Redis, relays that come back, a stop grace longer than the
    drain, pinned images, and no volume left behind by the one-shot services."""
    services = compose["services"]
    redis = services["redis"]
    m = re.fullmatch(r"\$\{COLONY_REDIS_IMAGE:-(redis:7[\w.-]*@sha256:[0-9a-f]{64})\}", redis["image"])
    assert m, f"redis: a pinned redis:7 by default (COLONY_REDIS_IMAGE overrides it): {redis['image']}"
    cmd = redis["command"]
    assert cmd[0] == "redis-server" and cmd[cmd.index("--appendonly") + 1] == "yes"
    assert cmd[cmd.index("--appendfsync") + 1] == "always"  # an acknowledged event survives a crash
    from relay.ops.runner import GracefulServer, uvicorn_config

    drain = inspect.signature(GracefulServer.__init__).parameters["drain_timeout"].default
    grace = uvicorn_config(object(), Config()).timeout_graceful_shutdown or 0
    for relay in ("relay-a", "relay-b", "relay-c"):
        svc = services[relay]
        assert svc.get("restart") == "unless-stopped", relay
        assert _seconds(svc["stop_grace_period"]) > drain + grace, (relay, drain, grace)
    # one-shot services run to completion: a VOLUME in the image would leave an anonymous volume
    # behind for each of them, unless they mount something at that path
    volumes = re.findall(r"^VOLUME\s+(.*)$", DOCKERFILE.read_text(), re.MULTILINE)
    paths = [p for v in volumes for p in (json.loads(v) if v.startswith("[") else v.split())]
    for name, svc in services.items():
        if svc.get("image") == COLONY_IMAGE and "restart" not in svc:
            mounted = {v.split(":")[1] for v in svc.get("volumes") or []}
            assert set(paths) <= mounted, f"{name} leaves an anonymous volume for {set(paths) - mounted}"


def test_dockerignore_keeps_the_context_small_and_whole() -> None:
    """Only what the Dockerfile copies goes into the build context (no data, keys, node_modules)."""
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "ignore everything, then let in what the image needs"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    for src in re.findall(r"^COPY (\S+)", DOCKERFILE.read_text(), re.MULTILINE):
        assert src.rstrip("/") in allowed, f"COPY {src} is not in the build context (.dockerignore)"
    assert {"**/*.key", "**/node_modules"} <= set(lines)


# --- the Dockerfile's entry command and healthcheck, on the host ---------------------------------


def _dockerfile_json(instruction: str) -> list[str]:
    text = DOCKERFILE.read_text()
    m = re.search(rf"^{instruction}\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert m, f"Dockerfile has no exec-form {instruction}"
    return json.loads(m.group(1))


def _healthcheck_cmd() -> list[str]:
    m = re.search(r"^HEALTHCHECK\s+(.*?)\s+CMD\s+(\[.*\])\s*$", DOCKERFILE.read_text(), re.MULTILINE)
    assert m, "Dockerfile has no exec-form HEALTHCHECK ... CMD [...]"
    return json.loads(m.group(2))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dockerfile_env() -> dict[str, str]:
    """The image's ENV (``ENV A=1 B=2``, continued lines), ``$PATH``-style references left as is."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV\s+(.*)$", text, re.MULTILINE):
        env.update(w.split("=", 1) for w in shlex.split(line))
    return env


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    # a pinned base (tag and digest) by default; the suite builds on a stand-in (scripts/docker-images)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}$", text, re.MULTILINE)
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}$", text, re.MULTILINE)
    assert re.search(r"^USER (?!root\b)\w+", text, re.MULTILINE)
    # a venv (PEP 668), the relay's server stack, at the versions the suite passed with
    env = _dockerfile_env()
    assert env["VIRTUAL_ENV"] == "/opt/colony" and env["PATH"].startswith("/opt/colony/bin:")
    venv = r'^RUN python3 -m venv "\$VIRTUAL_ENV" && pip install -r constraints/docker.txt$'
    assert re.search(venv, text, re.MULTILINE)
    assert re.search(r"^RUN pip install -c constraints/docker.txt '\.\[relay\]'", text, re.MULTILINE)
    # whatever command a container runs, serve listens wide on COLONY_PORT and stores under /data
    assert {k: env.get(k) for k in ("COLONY_HOST", "COLONY_PORT", "COLONY_DATA")} == {
        "COLONY_HOST": "0.0.0.0", "COLONY_PORT": "8765", "COLONY_DATA": "/data"}
    assert _dockerfile_json("ENTRYPOINT") == ["colony"]
    assert _dockerfile_json("CMD") == ["serve"]
    assert "COLONY_PORT" in " ".join(_healthcheck_cmd()) and "8765/" not in " ".join(_healthcheck_cmd())
    assert not re.search(r"^VOLUME", text, re.MULTILINE)  # one-shot containers would leave anonymous volumes
    for src in re.findall(r"^COPY (\S+)", text, re.MULTILINE):  # everything copied exists in the build context
        assert (ROOT / src).exists(), src


def test_docker_constraints_pin_the_relay_install() -> None:
    """constraints/docker.txt (scripts/docker-constraints) pins every direct dependency of
    ``colony[relay]`` at a version pyproject.toml allows."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (ROOT / "constraints" / "docker.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    for text in [*project["dependencies"], *project["optional-dependencies"]["relay"]]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"constraints/docker.txt does not pin {name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req.specifier}"


def test_dockerfile_entry_command_and_healthcheck_run_on_host(tmp_path: Path) -> None:
    entry, cmd, check = _dockerfile_json("ENTRYPOINT"), _dockerfile_json("CMD"), _healthcheck_cmd()
    port = _free_port()
    # the image's settings, but a free port (followed by the healthcheck), a data dir in tmp, and
    # loopback (0.0.0.0 in the container; no need to listen wide here)
    image_env = {k: v for k, v in _dockerfile_env().items() if k.startswith("COLONY_")}
    env = {**os.environ, **image_env, "COLONY_PORT": str(port), "COLONY_DATA": str(tmp_path / "data"),
           "COLONY_HOST": "127.0.0.1"}
    assert entry == ["colony"]
    exe = shutil.which("colony")
    program = [exe] if exe else _host_colony()  # the installed console script, as in the image
    assert check[0] == "python"
    probe = [sys.executable, *check[1:]]
    proc = subprocess.Popen([*program, *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path,
                            env=env)
    try:
        assert proc.stdout is not None
        seen = b""
        while b"listening on" not in seen:  # the relay says when it serves (pytest-timeout bounds this)
            line = proc.stdout.readline()
            assert line, f"the entry command exited before listening: {seen.decode(errors='replace')}"
            seen += line
        assert f"listening on http://127.0.0.1:{port} " in seen.decode()
        assert (tmp_path / "data").is_dir()  # COLONY_DATA
        res = subprocess.run(probe, capture_output=True, timeout=30, env=env, check=False)
        assert res.returncode == 0, res.stderr.decode()  # healthy as soon as it listens (on COLONY_PORT)
        proc.send_signal(signal.SIGTERM)  # `docker stop`
        # uvicorn re-raises the SIGTERM it handled once drained (tests/relay/ops/test_shutdown.py)
        assert proc.wait(20) in (0, -signal.SIGTERM)
        stopped = subprocess.run(probe, capture_output=True, timeout=30, env=env, check=False)
        assert stopped.returncode != 0  # unhealthy once stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- colony pubkey, and colony demo --relay against a running relay ------------------------------


async def _colony(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*_host_colony(), *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, cwd=ROOT)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_pubkey(tmp_path: Path) -> None:
    path = tmp_path / "k" / "op.key"
    rc, _, err = await _colony("pubkey", str(path))
    assert rc == 2 and "--create" in err and not path.exists()
    rc, out, err = await _colony("pubkey", "--create", str(path))
    assert rc == 0, err
    assert out.strip() == Keypair.load(path).public_hex
    assert (path.stat().st_mode & 0o777) == 0o600
    rc, again, _ = await _colony("pubkey", str(path), "--create")  # an existing key is kept
    assert (rc, again) == (0, out)
    path.write_text("not a key\n")
    rc, _, err = await _colony("pubkey", str(path))
    assert rc == 2 and "not a Colony key file" in err


async def test_demo_against_running_relay(tmp_path: Path) -> None:
    key = tmp_path / "operator.key"
    rc, op, err = await _colony("pubkey", "--create", str(key))
    assert rc == 0, err
    relay = await start_relay_proc(tmp_path / "data", "--operator", op.strip())
    try:
        rc, _, err = await _colony("demo", "--relay", relay.url)
        assert rc == 2 and "--operator-key" in err
        rc, _, err = await _colony("demo", "--relay", relay.url, "--operator-key", str(key), "--show-url", "a",
                                   "--show-url", "b")
        assert rc == 2 and "one --show-url per --relay" in err
        shown = "http://localhost:8701"  # what a person opens (a published port), printed in the banner
        rc, out, err = await _colony("demo", "--relay", relay.url, "--operator-key", str(key), "--pace", "0.05",
                                     "--show-url", shown, timeout=90)
        assert rc == 0, out + err
        assert f"scripted agents against {relay.url}" in out and "relay on" not in out
        assert f"watch it live:   {shown}/#doc/demo" in out and f"on {shown}:" in out
        assert f"{relay.url}/#" not in out and f"--relay {relay.url}" not in out
        assert "all agents converged" in out
        body = out.split("all agents converged) ---\n", 1)[1]
        assert "# Relay design note" in body and "reviewer" in body
        assert "the document reads as scripted" in out and "every scene ended as scripted" in out
        for line in ("relay awarded the review to ana", "relay expired ana (stake slashed); bo was promoted",
                     "planner accepted bo's review", "dee checkpointed 2 of 4 sections and crashed",
                     "relay flagged prose stalled; the planner reassigned it to eli",
                     "eli resumed prose from checkpoint {'sections': 2}", "task tree completed",
                     "agents vouched for each other"):
            assert line in out, line
        # the relay kept the document the agents converged on
        rc, text, err = await _colony("doc", "cat", "doc/demo", "--relay", relay.url)
        assert rc == 0, err
        assert text.rstrip("\n") == body.split("\n--- the document reads", 1)[0].rstrip("\n")
    finally:
        await relay.stop()
