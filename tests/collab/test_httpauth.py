"""Signed HTTP reads (collab/httpauth.py, docs/protocol.md section 15.1), against the vector."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from collab.errors import BadSignature, InvalidEvent, Unauthorized
from collab.httpauth import MAX_SKEW_MS, authorization, check, signing_bytes
from collab.keys import Keypair

VECTOR = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "http_auth.json").read_text(encoding="ascii"))
CLIENT = Keypair.from_seed(bytes.fromhex(VECTOR["client_seed"]))
RELAY = Keypair.from_seed(bytes.fromhex(VECTOR["relay_seed"])).public_hex
METHOD, PATH, TS = VECTOR["method"], VECTOR["path"], VECTOR["ts"]


def test_the_vector_is_reproduced_and_accepted() -> None:
    assert signing_bytes(CLIENT.public_hex, RELAY, METHOD, PATH, TS).hex() == VECTOR["signing_bytes_hex"]
    assert authorization(CLIENT, RELAY, METHOD, PATH, TS) == VECTOR["authorization"]
    assert check(VECTOR["authorization"], RELAY, METHOD, PATH, TS + MAX_SKEW_MS) == CLIENT.public_hex
    assert check(VECTOR["authorization"], RELAY, METHOD, PATH, TS - MAX_SKEW_MS) == CLIENT.public_hex


def test_another_relay_path_or_method_or_a_stale_ts_is_refused() -> None:
    header = VECTOR["authorization"]
    for relay, method, path in ((CLIENT.public_hex, METHOD, PATH), (RELAY, "POST", PATH), (RELAY, METHOD, "/feeds")):
        with pytest.raises(BadSignature):
            check(header, relay, method, path, TS)
    with pytest.raises(Unauthorized):
        check(header, RELAY, METHOD, PATH, TS + MAX_SKEW_MS + 1)


@pytest.mark.parametrize("header", ["", "Bearer x", "Colony key=00,ts=1,sig=00", VECTOR["authorization"] + " ",
                                    VECTOR["authorization"].replace("ts=", "ts=0"),
                                    VECTOR["authorization"].replace("Colony ", "colony "),
                                    VECTOR["authorization"].upper()])
def test_a_malformed_header_is_invalid(header: str) -> None:
    with pytest.raises(InvalidEvent):
        check(header, RELAY, METHOD, PATH, TS)
