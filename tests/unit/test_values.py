"""The shared value types keep the strings edged has always written (YAML, JSON, protos, CLI)."""

from __future__ import annotations

import json
import pickle

import pytest

from edged.config import BudgetsConfig, resolve_budgets
from edged.manager.memory.planner import tier_budget
from edged.service.messages import STATE_TO_PB
from edged.v1 import errors_pb2
from edged.v1 import models_pb2 as mpb
from edged.values import MEMORY_TIERS, TIERS, Budgets, ModelKey, SlotState, Tier


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


def test_one_budgets_value_from_the_config_to_the_planner() -> None:
    b = resolve_budgets(BudgetsConfig(memory_total=8 << 30, reserve=1 << 30, ram="40%",
                                      swap="30%", storage=20 << 30), 16 << 30, 100 << 30)
    assert isinstance(b, Budgets)  # the very value the planner and the catalog take
    assert [b.of(t) for t in TIERS] == [b.ram, b.swap, b.storage] == [
        int(0.4 * (7 << 30)), int(0.3 * (7 << 30)), 20 << 30]
    assert b.edged == (8 << 30) - (1 << 30)  # the whole-edged rule (planner rule 4)
    assert Budgets(ram=1, swap=2, reserve=0).edged == 0  # a bare planner: the rule is off
    with pytest.raises(ValueError, match="holds no memory"):
        tier_budget(b, Tier.STORAGE)  # the planner plans ram and swap loads only


def test_a_model_key_is_the_name_version_string() -> None:
    k = ModelKey("asr", 3)
    assert k == "asr:3" and str(k) == "asr:3" and type(str(k)) is str and repr(k) == "'asr:3'"
    assert (k.name, k.version) == ("asr", 3) and {"asr:3": 1}[k] == 1
    assert ModelKey.parse("asr:3") == k and ModelKey.parse("asr:3").version == 3
    back = pickle.loads(pickle.dumps(k))  # as it travels to a worker process
    assert type(back) is ModelKey and back == k and back.name == "asr"
    assert json.dumps([k]) == '["asr:3"]'
    assert errors_pb2.ErrorInfo(metadata={"key": k}).metadata["key"] == "asr:3"
    for bad in ("asr", "asr:", ":3", "asr:x", "asr:1>swap"):
        with pytest.raises(ValueError, match="not a model key"):
            ModelKey.parse(bad)
