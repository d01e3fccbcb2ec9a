"""docker/: the compose file is consistent with the repository and the CLI, and the image's
entry command and healthcheck work, run on the host exactly as the image runs them.

No image is built or pulled here (no registry access in CI). When ``docker compose`` exists it
also validates the file (``config -q``); the structural checks below always run, on a small
YAML-subset parser (PyYAML is not a dependency) cross-checked against PyYAML when installed.
"""
from __future__ import annotations

import asyncio
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
from relay.ops.cli import build_parser, config_from
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


def _docker_compose_works() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30,
                              check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_compose_config_validates(compose: dict[str, Any]) -> None:
    """``docker compose config`` where that tool is installed; else the file must parse as the
    YAML subset compose files use (the structural tests below check what it references)."""
    if _docker_compose_works():
        res = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True,
                             text=True, timeout=60, cwd=ROOT, check=False)
        assert res.returncode == 0, res.stderr
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
        if svc.get("image") == COLONY_IMAGE:
            assert "build" in svc, f"{name}: {COLONY_IMAGE} is built, never pulled"
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
    assert services["redis"]["image"] == "redis:7" and "--appendonly" in services["redis"]["command"]
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
    for relay in ("relay-a", "relay-b", "relay-c"):
        argv = json.loads(run(_shell_of(services[relay]) or ""))
        configs[relay] = config_from(parser.parse_args(["serve", *argv]))
    for relay, cfg in configs.items():
        assert cfg.operators == (keys["operator"],), relay
        assert cfg.public_url == f"http://{relay}:8765"
        assert cfg.port == 8765 and cfg.host == "0.0.0.0"
    for relay in ("relay-a", "relay-b"):  # one site: same Redis, same key, federated with the edge
        assert configs[relay].redis_url == "redis://redis:6379/0"
        assert str(configs[relay].relay_key_file) == f"{keys_dir}/site.key"
        assert configs[relay].peers == (f"http://relay-c:8765#{keys['edge']}",)
    assert configs["relay-c"].redis_url is None and str(configs["relay-c"].relay_key_file) == f"{keys_dir}/edge.key"
    assert configs["relay-c"].peers == (f"http://relay-a:8765#{keys['site']}",)
    assert len({cfg.pins for cfg in configs.values()}) == 1  # every member routes alike
    demo = services["demo"]["command"]
    relays = [demo[i + 1] for i, w in enumerate(demo) if w == "--relay"]
    assert relays == [f"http://{r}:8765" for r in ("relay-a", "relay-b", "relay-c")]
    assert demo[demo.index("--operator-key") + 1] == "/keys/operator.key"


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


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.MULTILINE)
    assert re.search(r"^USER (?!root\b)\w+", text, re.MULTILINE)
    assert re.search(r"^RUN pip install \.", text, re.MULTILINE)
    assert _dockerfile_json("ENTRYPOINT") == ["colony"]
    assert _dockerfile_json("CMD") == ["serve", "--host", "0.0.0.0", "--port", "8765", "--data", "/data"]
    for src in re.findall(r"^COPY (\S+)", text, re.MULTILINE):  # everything copied exists in the build context
        assert (ROOT / src).exists(), src


def test_dockerfile_entry_command_and_healthcheck_run_on_host(tmp_path: Path) -> None:
    entry, cmd, check = _dockerfile_json("ENTRYPOINT"), _dockerfile_json("CMD"), _healthcheck_cmd()
    port = _free_port()
    argv = list(cmd)
    argv[argv.index("--port") + 1] = str(port)
    argv[argv.index("--data") + 1] = str(tmp_path / "data")
    argv[argv.index("--host") + 1] = "127.0.0.1"  # 0.0.0.0 in the container; no need to listen wide here
    assert entry == ["colony"]
    exe = shutil.which("colony")
    program = [exe] if exe else _host_colony()  # the installed console script, as in the image
    assert check[0] == "python" and "http://127.0.0.1:8765/health" in " ".join(check)
    probe = [sys.executable, *[a.replace("127.0.0.1:8765", f"127.0.0.1:{port}") for a in check[1:]]]
    proc = subprocess.Popen([*program, *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        seen = b""
        while b"listening on" not in seen:  # the relay says when it serves (pytest-timeout bounds this)
            line = proc.stdout.readline()
            assert line, f"the entry command exited before listening: {seen.decode(errors='replace')}"
            seen += line
        res = subprocess.run(probe, capture_output=True, timeout=30, check=False)
        assert res.returncode == 0, res.stderr.decode()  # healthy as soon as it listens
        proc.send_signal(signal.SIGTERM)  # `docker stop`
        # uvicorn re-raises the SIGTERM it handled once drained (tests/relay/ops/test_shutdown.py)
        assert proc.wait(20) in (0, -signal.SIGTERM)
        stopped = subprocess.run(probe, capture_output=True, timeout=30, check=False)
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
        rc, out, err = await _colony("demo", "--relay", relay.url, "--operator-key", str(key), "--pace", "0.05",
                                     timeout=90)
        assert rc == 0, out + err
        assert f"scripted agents against {relay.url}" in out and "relay on" not in out
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
