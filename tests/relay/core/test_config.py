"""relay/core/config.py: the relay's settings object. (How ``colony serve`` fills it from flags,
environment and TOML is tested with the CLI: tests/relay/ops/test_cli_settings.py.)"""
from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path

from relay.core.config import Config
from relay.core.limits import Limits, YjsLimits


def test_every_setting_has_a_default() -> None:
    for f in fields(Config):
        assert f.default is not MISSING or f.default_factory is not MISSING, f.name


def test_defaults_are_the_embedded_single_process_relay() -> None:
    c = Config()
    assert c.redis_url is None and c.peers == () and c.synchronous == "FULL"
    assert c.host == "127.0.0.1" and c.data_dir == Path("./colony-data")
    assert c.limits == Limits() and c.yjs == YjsLimits()
    assert c.replicate == ("vouch/",)


def test_configs_do_not_share_mutable_defaults() -> None:
    a, b = Config(), Config()
    a.port = 1
    assert b.port == 8765
    c = Config(limits=Limits(max_frame_bytes=5), port=0)
    assert c.limits.max_frame_bytes == 5 and c.port == 0
