"""The decision log: append-only, each line chained to the one before and signed; a rewritten history is refused."""
from __future__ import annotations

import json

import pytest

from modelmake.bundle import keys
from modelmake.errors import RolloutLogError
from modelmake.repository.offer import Offer
from modelmake.repository.rollouts import LOG_FILE, append_decision, latest_offer, read_log, steered

KEY = keys.generate_signing_key()


def decision(action: str, percent: int) -> dict:
    offer = Offer("2.0.0", percent * 100, "1.0.0")
    return {"channel": "stable", "model": "digits", "version": "2.0.0", "action": action, "offer": offer.document(), "index_version": 1}


def test_decisions_are_appended_in_sequence_and_chained(tmp_path):
    first = append_decision(tmp_path, decision("advance", 25), KEY)
    second = append_decision(tmp_path, decision("advance", 50), KEY)
    assert (first["sequence"], first["chain"], second["sequence"]) == (1, None, 2)
    assert read_log(tmp_path, KEY.public_key()) == [first, second]
    assert latest_offer([first, second], "stable", "digits", "2.0.0").rollout_basis_points == 5000
    assert latest_offer([first, second], "stable", "digits", "3.0.0") is None
    spec = {"stable": {"digits": Offer("2.0.0", 500, "1.0.0")}, "beta": {"digits": Offer("3.0.0")}}
    assert steered(tmp_path, spec, KEY.public_key()) == {"stable": {"digits": Offer("2.0.0", 5000, "1.0.0")},
                                                         "beta": {"digits": Offer("3.0.0")}}


@pytest.mark.parametrize("tamper", ["edit", "drop", "swap", "resign"])
def test_a_rewritten_history_is_refused_before_anything_is_appended(tmp_path, tamper):
    for percent in (25, 50, 100):
        append_decision(tmp_path, decision("advance", percent), KEY)
    log = tmp_path / LOG_FILE
    lines = log.read_bytes().splitlines(keepends=True)
    if tamper == "edit":
        entry = json.loads(lines[1])
        lines[1] = json.dumps({**entry, "action": "hold"}, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    elif tamper == "drop":
        del lines[1]
    elif tamper == "swap":
        lines[0], lines[1] = lines[1], lines[0]
    else:  # signed again with another key
        log.unlink()
        other = keys.generate_signing_key()
        for percent in (25, 50, 100):
            append_decision(tmp_path, decision("advance", percent), other)
        lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines))
    with pytest.raises(RolloutLogError, match=r"rollouts\.jsonl:[12]"):
        append_decision(tmp_path, decision("hold", 100), KEY)
    assert log.read_bytes() == b"".join(lines)
