"""``colony serve`` settings: flags > environment variables > TOML file (--config) > defaults."""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import fields
from pathlib import Path

import httpx
import pytest

from collab.sandbox_supervisor import SandboxSettings
from relay.core.config import Config
from relay.core.limits import Limits, YjsLimits
from relay.ops.cli import build_parser
from relay.ops.cli_settings import SETTINGS, SETTINGS_BY_NAME, ConfigError, config_from, resolve_settings
from tests.procs import start_relay_proc

K1, K2, K3 = "a" * 64, "b" * 64, "c" * 64


async def colony(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COLONY_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "relay.ops.cli", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**clean, "COLUMNS": "200", **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


def serve_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


@pytest.fixture(autouse=True)
def no_colony_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in list(os.environ):
        if k.startswith("COLONY_"):
            monkeypatch.delenv(k)


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_precedence_flag_env_toml_default(tmp_path: Path) -> None:
    toml = write_toml(tmp_path / "c.toml", f"""
port = 1111
host = "10.0.0.1"
redis_prefix = "from-toml"
operator = ["{K1}"]
replicate = ["a/", "b/"]
max_frame_bytes = 1000
burst_key = 7
events_per_sec_key = 3
sync_interval = 5
ws_deflate = true
""")
    env = {"COLONY_PORT": "2222", "COLONY_HOST": "10.0.0.2", "COLONY_OPERATORS": f"{K2},{K3}",
           "COLONY_MAX_FRAME_BYTES": "2000", "COLONY_BURST_KEY": "8", "COLONY_WS_DEFLATE": "0"}
    args = serve_args("--config", str(toml), "--port", "3333", "--operator", K3, "--max-frame-bytes", "3000")
    v = resolve_settings(args, environ=env)
    assert v["port"] == 3333                      # flag beats env and TOML
    assert v["host"] == "10.0.0.2"                # env beats TOML
    assert v["redis_prefix"] == "from-toml"       # TOML beats default
    assert v["synchronous"] == "FULL"             # default
    assert v["operator"] == [K3]                  # a list from a flag replaces env and TOML lists
    assert v["replicate"] == ["a/", "b/"]
    assert v["max_frame_bytes"] == 3000 and v["burst_key"] == 8 and v["events_per_sec_key"] == 3.0
    assert v["max_event_bytes"] == Limits().max_event_bytes
    assert v["sync_interval"] == 5.0 and isinstance(v["sync_interval"], float)
    assert v["ws_deflate"] is False               # env "0" beats TOML true

    v = resolve_settings(serve_args("--config", str(toml)), environ=env)
    assert v["port"] == 2222 and v["operator"] == [K2, K3] and v["max_frame_bytes"] == 2000
    v = resolve_settings(serve_args("--config", str(toml), "--ws-deflate"), environ={"COLONY_WS_DEFLATE": "0"})
    assert v["ws_deflate"] is True
    v = resolve_settings(serve_args(), environ={"COLONY_CONFIG": str(toml)})  # the file from the environment
    assert v["port"] == 1111 and v["operator"] == [K1] and v["max_frame_bytes"] == 1000


def test_config_from_builds_a_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = write_toml(tmp_path / "c.toml", f"""
peer = ["http://127.0.0.1:9/#{K1}"]
data = "{tmp_path / 'd'}"
yjs_awareness_burst = 9
snapshot_every = 17
""")
    monkeypatch.setenv("COLONY_PEERS", f"http://127.0.0.1:8/#{K2}")
    monkeypatch.setenv("COLONY_REDIS", "")     # empty counts as unset
    cfg = config_from(serve_args("--config", str(toml), "--burst-ip", "5"))
    assert cfg.peers == (f"http://127.0.0.1:8/#{K2}",)
    assert cfg.data_dir == tmp_path / "d" and cfg.redis_url is None and cfg.relay_key_file is None
    assert cfg.limits == Limits(burst_ip=5)
    assert cfg.yjs == YjsLimits(awareness_burst=9) and cfg.snapshot_every == 17
    assert cfg.replicate == ("vouch/",)
    monkeypatch.delenv("COLONY_PEERS")
    assert config_from(serve_args()) == Config()  # nothing given: the built-in defaults


def test_the_table_names_each_setting_once() -> None:
    names = [s.name for s in SETTINGS]
    envs = [e for s in SETTINGS for e in s.env_names]
    assert len(set(names)) == len(names) and len({s.flag for s in SETTINGS}) == len(names)
    assert len(set(envs)) == len(envs)
    assert SETTINGS_BY_NAME["max_frame_bytes"].flag == "--max-frame-bytes"
    assert SETTINGS_BY_NAME["max_frame_bytes"].env_names == ("COLONY_MAX_FRAME_BYTES",)
    assert SETTINGS_BY_NAME["operator"].env_names == ("COLONY_OPERATORS", "COLONY_OPERATOR")
    assert SETTINGS_BY_NAME["log_level"].target is None


@pytest.mark.parametrize(("name", "text", "value"), [
    ("port", "0", 0), ("port", "65535", 65535), ("synchronous", "NORMAL", "NORMAL"),
    ("sync_interval", "0.25", 0.25), ("snapshot_every", "3", 3), ("operator", K1, K1),
    ("max_frame_bytes", "0", 0),
])
def test_convert_accepts(name: str, text: str, value: object) -> None:
    assert SETTINGS_BY_NAME[name].convert(text) == value


@pytest.mark.parametrize(("name", "text"), [
    ("port", "65536"), ("port", "-1"), ("port", "http"), ("synchronous", "OFF"), ("sync_interval", "0"),
    ("sync_interval", "inf"), ("sync_interval", "nan"), ("snapshot_every", "0"), ("operator", "A" * 64),
    ("max_frame_bytes", "-5"), ("peer", "http://h:1/"), ("log_format", "xml"),
])
def test_convert_refuses(name: str, text: str) -> None:
    with pytest.raises((argparse.ArgumentTypeError, ValueError)):
        SETTINGS_BY_NAME[name].convert(text)


def test_every_config_field_is_a_setting() -> None:
    targets = {s.target for s in SETTINGS}
    for f in fields(Config):
        if f.name == "limits":
            assert {f"limits.{n}" for n in Limits.names()} <= targets
        elif f.name == "yjs":
            assert {f"yjs.{g.name}" for g in fields(YjsLimits)} <= targets
        elif f.name == "sandbox":
            assert {f"sandbox.{g.name}" for g in fields(SandboxSettings)} <= targets
        else:
            assert f.name in targets, f.name


@pytest.mark.parametrize(("text", "needle"), [
    ("prot = 1\n", "'prot'"),
    ("[limits]\nmax_frame_bytes = 1\n", "'limits'"),
    ("port = \"8765\"\n", "'port'"),
    ("operator = \"x\"\n", "'operator'"),
    (f"operator = [\"{K1}\", \"nothex\"]\n", "'operator'"),
    ("sync_interval = -1\n", "'sync_interval'"),
    ("ws_deflate = 1\n", "'ws_deflate'"),
])
def test_bad_toml_is_a_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    toml = write_toml(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as exc:
        resolve_settings(serve_args("--config", str(toml)), environ={})
    assert needle in str(exc.value) and str(toml) in str(exc.value)


def test_bad_env_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="COLONY_PORT"):
        resolve_settings(serve_args(), environ={"COLONY_PORT": "http"})
    with pytest.raises(ConfigError, match="COLONY_WS_DEFLATE"):
        resolve_settings(serve_args(), environ={"COLONY_WS_DEFLATE": "maybe"})


async def test_unknown_toml_key_exits_2(tmp_path: Path) -> None:
    toml = write_toml(tmp_path / "c.toml", "port = 0\nmax_frame_byte = 10\n")
    rc, _, err = await colony("serve", "--config", str(toml), "--data", str(tmp_path / "d"))
    assert rc == 2
    assert "max_frame_byte" in err and str(toml) in err
    rc, _, err = await colony("serve", "--data", str(tmp_path / "d"),
                              env={"COLONY_CONFIG": str(tmp_path / "nope.toml")})
    assert rc == 2 and "nope.toml" in err


async def test_help_lists_every_setting() -> None:
    rc, out, _ = await colony("serve", "--help")
    assert rc == 0
    for s in SETTINGS:
        assert s.flag in out, s.flag
        for env in s.env_names:
            assert env in out, env
    for name in [f.name for f in fields(Config)] + Limits.names():
        if name not in ("limits", "yjs", "sandbox", "data_dir", "redis_url", "relay_key_file", "operators", "peers",
                        "pins"):
            assert "--" + name.replace("_", "-") in out, name
    assert "--config" in out and "--log-format" in out
    assert "limit (default" not in out


async def test_serve_with_a_config_file(tmp_path: Path) -> None:
    toml = write_toml(tmp_path / "relay.toml", """
# a relay's settings
max_frame_bytes = 65536
burst_key = 11
port = 1
""")
    # --port 0 (a flag, from start_relay_proc) beats the file's port
    relay = await start_relay_proc(tmp_path / "data", "--config", str(toml), "--burst-ip", "99",
                                   "--log-format", "json")
    try:
        async with httpx.AsyncClient() as http:
            limits = (await http.get(f"{relay.url}/limits")).json()
        assert limits["max_frame_bytes"] == 65536 and limits["burst_key"] == 11 and limits["burst_ip"] == 99
        assert limits["max_subscriptions"] == Limits().max_subscriptions
    finally:
        await relay.stop()


def test_every_setting_is_documented_in_operations_md() -> None:
    """docs/operations.md's settings table names every flag, its environment variable and its
    TOML key (a new limit or setting lands with its documentation)."""
    from pathlib import Path

    from relay.ops.cli_settings import SETTINGS

    doc = (Path(__file__).resolve().parents[3] / "docs" / "operations.md").read_text()
    rows = {line.split(" | ")[0] for line in doc.splitlines() if line.startswith("| `--")}
    missing = []
    for st in SETTINGS:
        flag = "| `--" + st.name.replace("_", "-") + "`"
        row = next((line for line in doc.splitlines() if line.startswith(flag + " ")), None)
        if row is None or not all(f"`{e}`" in row for e in st.env_names) or f"`{st.name}`" not in row:
            missing.append(st.name)
    assert not missing, missing
    assert len(rows) == len(SETTINGS)
