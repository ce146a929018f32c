"""The shared value types keep the strings edged has always written (YAML, JSON, protos, CLI)."""

from __future__ import annotations

import json

from edged.v1 import errors_pb2
from edged.values import MEMORY_TIERS, TIERS, Tier


def test_a_tier_is_its_string() -> None:
    assert [str(t) for t in TIERS] == ["ram", "swap", "storage"]
    assert Tier("swap") is Tier.SWAP and Tier.SWAP == "swap" and f"{Tier.RAM}.yaml" == "ram.yaml"
    assert {"swap": 1}[Tier.SWAP] == 1  # same hash: dicts keyed by plain strings still work
    assert json.dumps({"tier": Tier.STORAGE}) == '{"tier": "storage"}'
    assert errors_pb2.CapacityRejection(tier=Tier.RAM).tier == "ram"  # a proto string field
    assert MEMORY_TIERS == ("ram", "swap") and "storage" not in MEMORY_TIERS
    assert f"tier must be {Tier.SWAP!r}" == "tier must be 'swap'"  # messages and argparse
