"""The shared value types keep the strings edged has always written (YAML, JSON, protos, CLI)."""

from __future__ import annotations

import json

from edged.service.messages import STATE_TO_PB
from edged.v1 import errors_pb2
from edged.v1 import models_pb2 as mpb
from edged.values import MEMORY_TIERS, TIERS, SlotState, Tier


def test_a_tier_is_its_string() -> None:
    assert [str(t) for t in TIERS] == ["ram", "swap", "storage"]
    assert Tier("swap") is Tier.SWAP and Tier.SWAP == "swap" and f"{Tier.RAM}.yaml" == "ram.yaml"
    assert {"swap": 1}[Tier.SWAP] == 1  # same hash: dicts keyed by plain strings still work
    assert json.dumps({"tier": Tier.STORAGE}) == '{"tier": "storage"}'
    assert errors_pb2.CapacityRejection(tier=Tier.RAM).tier == "ram"  # a proto string field
    assert MEMORY_TIERS == ("ram", "swap") and "storage" not in MEMORY_TIERS
    assert f"tier must be {Tier.SWAP!r}" == "tier must be 'swap'"  # messages and argparse


def test_slot_states_are_the_status_strings() -> None:
    assert [str(s) for s in SlotState] == ["loading", "ready", "unloading", "failed"]
    assert SlotState.READY == "ready" and repr(SlotState.FAILED) == "'failed'"
    assert STATE_TO_PB["ready"] == STATE_TO_PB[SlotState.READY] == mpb.LOAD_STATE_READY
    assert all(s in STATE_TO_PB for s in SlotState)  # every state has its proto value
