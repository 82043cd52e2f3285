from __future__ import annotations

import math

import numpy as np

from models.events import UsageEvent
from models.features import (
    ACCOUNT_FEATURES,
    BLOCK_FEATURES,
    account_windows,
    block_windows,
    near_duplicate_mask,
)
from models.windows import Windower

A = {f.name: i for i, f in enumerate(ACCOUNT_FEATURES)}
B = {f.name: i for i, f in enumerate(BLOCK_FEATURES)}
DAY = 86_400_000
T0 = 1_795_392_000_000


def window(events: list[UsageEvent]):
    w = Windower(60_000, 0)
    for e in events:
        w.add(e)
    (closed,) = w.flush()
    return closed


def ev(
    i,
    account,
    ip,
    ts=0,
    fp=None,
    cot=None,
    status=200,
    model="m",
    created=None,
    pay=None,
    tin=100,
    tout=300,
):
    block = ip.rsplit(".", 1)[0] + ".0/24"
    return UsageEvent(
        f"e{i}", T0 + ts, account, ip, block, model, tin, tout, status, None, fp, cot, pay, created
    )


def test_account_features_on_a_hand_made_window() -> None:
    tmpl = 0x0123456789ABCDEF
    events = [
        # "bot": 5 requests every 10 s, 3 IPs in 2 blocks, templated prompts, heavy reasoning
        ev(0, "bot", "10.0.0.1", 0, tmpl, 0.9, created=T0 - DAY),
        ev(1, "bot", "10.0.0.2", 10_000, tmpl ^ 0b1, 0.8),
        ev(2, "bot", "10.0.1.3", 20_000, tmpl ^ 0b110, 0.95),
        ev(3, "bot", "10.0.0.1", 30_000, tmpl, 0.9, status=429),
        ev(4, "bot", "10.0.0.1", 40_000, tmpl ^ (1 << 40), 0.85, model="new"),
        # "human": two requests, no optional fields at all
        ev(5, "human", "192.168.1.1", 5_000, tin=1_000, tout=100),
        ev(6, "human", "192.168.1.1", 50_000, tin=1_000, tout=100),
    ]
    w = window(events)
    new_model = np.array([name == "new" for name in w.models])
    aw = account_windows(w, new_model)
    bot, human = aw.values[aw.ids.index("bot")], aw.values[aw.ids.index("human")]
    assert bot[A["requests"]] == 5 and bot[A["distinct_ips"]] == 3
    assert bot[A["distinct_ip_blocks"]] == 2 and bot[A["distinct_models"]] == 2
    assert bot[A["output_input_ratio"]] == 3.0
    assert bot[A["error_rate"]] == 0.2 and bot[A["new_model_share"]] == 0.2
    assert bot[A["prompt_repetition"]] == 1 - 4 / 5  # 4 distinct fingerprints of 5
    assert bot[A["near_duplicate_rate"]] == 1.0  # every prompt within 4 bits of another
    assert math.isclose(bot[A["cot_mean"]], 0.88)
    assert bot[A["cot_p90"]] == 0.9
    assert bot[A["timing_regularity"]] == 1.0  # gaps exactly 10 s
    assert math.isclose(bot[A["account_newness"]], math.exp(-(1 + 1 / 1440) / 7))
    # optional fields absent -> unknown, never an error
    for name in (
        "prompt_repetition",
        "near_duplicate_rate",
        "cot_mean",
        "cot_p90",
        "timing_regularity",
        "account_newness",
    ):
        assert math.isnan(human[A[name]]), name
    assert human[A["requests"]] == 2 and human[A["output_input_ratio"]] == 0.1


def test_block_features_count_accounts_new_accounts_and_shared_payments() -> None:
    events = [
        ev(i, f"new{i}", f"10.9.9.{i}", i * 1000, created=T0 - DAY, pay="card-1") for i in range(4)
    ]
    events += [ev(10, "old", "10.9.9.50", 100, created=T0 - 400 * DAY, pay="card-2")]
    events += [ev(20, "solo", "10.8.8.1", 0, created=T0 - DAY)]
    w = window(events)
    bw = block_windows(w, np.zeros(len(w.models), dtype=bool))
    farm = bw.values[bw.ids.index("10.9.9.0/24")]
    assert farm[B["distinct_accounts"]] == 5
    assert farm[B["new_account_share"]] == 0.8
    assert farm[B["accounts_per_payment"]] == 2.5
    solo = bw.values[bw.ids.index("10.8.8.0/24")]
    assert math.isnan(solo[B["new_account_share"]])  # one account is not a crowd


def test_near_duplicates_need_few_differing_bits_within_the_same_entity() -> None:
    g = np.array([0, 0, 0, 1], dtype=np.int32)
    base = 0xDEADBEEF00000000
    fp = np.array([base, base ^ 0b1111, base ^ (0xFFFF << 8), base], dtype=np.uint64)
    assert near_duplicate_mask(g, fp).tolist() == [True, True, False, False]
