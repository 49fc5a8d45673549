"""CorrectnessReward: fast path, math-verify path, None and counters, pool, TRL calling forms."""

from __future__ import annotations

import logging
import pickle
import signal
import threading
import time

import pytest

from latentrl.rewards import CorrectnessReward, correctness_reward, gold_answer
from latentrl.rewards._worker import ItemTimeout, deadline
from latentrl.rewards.correctness import STAT_KEYS, correctness
from tests.rewards import rewards_helpers

# sympy needs far more than 0.5 s to compare these (measured: > 15 s), and the work is plain
# Python, so the alarm interrupts it.
SLOW_GOLD = "(x+y+z+1)^{40}"
SLOW_COMPLETION = "The answer is $(x+y+z+2)^{40}$."


def stats(**nonzero: int) -> dict[str, int]:
    return {key: nonzero.get(key, 0) for key in STAT_KEYS}


def test_numbers_take_the_exact_fast_path():
    reward = CorrectnessReward()
    completions = ["#### 18", "The answer is 18.0", "#### 17", "no idea", r"\boxed{\frac{36}{2}}"]
    assert reward(None, completions, answer=["18"] * 5) == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert reward.stats == stats(items=5, judged=5, no_answer=1)
    # Fractions and decimals compare exactly, whichever way they are written.
    assert reward(
        None, ["A: 0.5", "A: 1/3", "A: 0.333"], answer=["1/2", r"\frac{1}{3}", "1/3"]
    ) == [
        1.0,
        1.0,
        0.0,
    ]


def test_math_verify_decides_non_numbers():
    reward = CorrectnessReward()
    completions = [
        r"so \boxed{\frac{\sqrt{2}}{2}}",
        r"so \boxed{2^{4}}",  # not a plain number: math-verify evaluates it
        r"so \boxed{x+1}",
        r"so \boxed{1+x}",
        "no answer at all",
    ]
    golds = [r"\frac{1}{\sqrt{2}}", "16", "x+2", "x+1", r"\sqrt{2}"]
    assert reward(None, completions, answer=golds) == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert reward.stats == stats(items=5, judged=5, no_answer=1)


def test_without_fast_path_math_verify_agrees_on_numbers():
    reward = CorrectnessReward(use_fast_path=False)
    completions = ["#### 1,234", "A: 0.5", "The answer is -3.", "#### 7", "nothing"]
    assert reward(None, completions, answer=["1234", "1/2", "-3", "8", "5"]) == [
        1.0,
        1.0,
        1.0,
        0.0,
        0.0,
    ]
    assert reward.stats == stats(items=5, judged=5, no_answer=1)


def test_missing_and_unparseable_gold_give_none_counted_and_logged(caplog):
    reward = CorrectnessReward()
    with caplog.at_level(logging.WARNING, logger="latentrl.rewards.correctness"):
        result = reward(
            None, ["#### 1", "#### 2", "#### 3", "#### 4"], answer=["1", None, "", "\\"]
        )
    assert result == [1.0, None, None, None]
    assert reward.stats == stats(items=4, judged=1, unparseable_gold=3)
    assert [r.getMessage() for r in caplog.records] == [
        "correctness: 3 of 4 items could not be judged (unparseable_gold), reward None; "
        "first: item 1: missing gold answer None"
    ]


def test_math_verify_error_gives_none_and_counts():
    reward = CorrectnessReward()
    # sympy raises "Can't evaluate nan or zoo" comparing 1/0 with 1/0.
    assert reward(None, [r"\boxed{\frac{1}{0}}"], answer=[r"\frac{1}{0}"]) == [None]
    assert reward.stats == stats(items=1, errors=1)


def test_timeout_in_process_gives_none(caplog):
    reward = CorrectnessReward(timeout_s=0.5)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="latentrl.rewards.correctness"):
        result = reward(None, ["#### 2", SLOW_COMPLETION, "#### 3"], answer=["2", SLOW_GOLD, "4"])
    elapsed = time.monotonic() - start
    assert result == [1.0, None, 0.0]
    assert reward.stats == stats(items=3, judged=2, timeouts=1)
    assert elapsed < 5.0
    assert [r.getMessage() for r in caplog.records] == [
        "correctness: 1 of 3 items could not be judged (timeout), reward None; "
        "first: item 1: judging took longer than 0.5 s"
    ]


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_deadline_repeats_an_alarm_that_was_dropped():
    # Python drops an exception raised inside a finaliser (``__del__`` run by the garbage
    # collector): the body here drops the first alarm the same way; the next must follow.
    handler_before = signal.getsignal(signal.SIGALRM)
    start = time.monotonic()
    dropped = False
    with pytest.raises(ItemTimeout), deadline(0.2):
        try:
            _spin(5.0)
        except ItemTimeout:
            dropped = True
        _spin(5.0)
    elapsed = time.monotonic() - start
    assert dropped
    assert 0.2 <= elapsed < 2.5  # interrupted, long before the body's own 5 s
    # Nothing of it is left: the handler is the one before, and no repeating timer.
    assert signal.getsignal(signal.SIGALRM) is handler_before
    assert signal.getitimer(signal.ITIMER_REAL)[1] == 0.0


def test_outside_main_thread_runs_without_deadline_and_says_so(caplog):
    reward = CorrectnessReward()
    results = []
    with caplog.at_level(logging.WARNING, logger="latentrl.rewards.correctness"):
        thread = threading.Thread(
            target=lambda: results.append(reward(None, [r"\boxed{x+1}"], answer=["1+x"]))
        )
        thread.start()
        thread.join()
    assert results == [[1.0]]
    assert [r.getMessage() for r in caplog.records] == [
        "correctness: called outside the main thread with num_workers <= 1: no timeout"
    ]


def test_conversational_completions_and_trl_kwargs():
    reward = CorrectnessReward()
    prompts = [[{"role": "user", "content": "How many?"}]] * 3
    completions = [
        [{"role": "assistant", "content": "#### 18"}],
        [{"role": "assistant", "content": "#### 4"}, {"role": "assistant", "content": "#### 5"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "The answer is 7."}]}],
    ]
    result = reward(
        prompts=prompts,
        completions=completions,
        completion_ids=[[1, 2], [3], [4]],
        trainer_state=object(),
        log_extra=lambda *a: None,
        log_metric=lambda *a: None,
        answer=["18", "4", "7"],
        question=["q1", "q2", "q3"],
    )
    assert result == [1.0, 0.0, 1.0]  # the last message counts


def test_gold_column_option_and_errors():
    reward = CorrectnessReward(gold_column="solution")
    assert reward(None, ["#### 3"], solution=["She has 1 + 2 = 3.\n#### 3"]) == [1.0]
    with pytest.raises(ValueError) as info:
        reward(None, ["#### 3"], answer=["3"], completion_ids=[[1]], trainer_state=None)
    assert str(info.value) == (
        "CorrectnessReward needs the gold answers as keyword argument 'solution' (set gold_column "
        "to the dataset column that holds them); got columns ['answer']"
    )
    with pytest.raises(ValueError, match="got 2 completions but 1 gold answers in 'solution'"):
        reward(None, ["#### 3", "#### 4"], solution=["3"])
    with pytest.raises(TypeError, match="completion 0 must be a string or a non-empty list"):
        reward(None, [[]], solution=["3"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout_s": 0}, "CorrectnessReward.timeout_s must be a finite number > 0, got 0"),
        ({"timeout_s": "5"}, "CorrectnessReward.timeout_s must be a number, got '5'"),
        ({"num_workers": -1}, "CorrectnessReward.num_workers must be an int >= 0, got -1"),
        ({"gold_column": ""}, "CorrectnessReward.gold_column must be a non-empty string, got ''"),
        (
            {"start_method": "fork"},
            "CorrectnessReward.start_method must be one of ['spawn', 'forkserver'], got 'fork'",
        ),
        ({"extraction_order": ["hash", "xml"]}, "unknown answer format(s) ['xml']"),
    ],
)
def test_option_validation(options, message):
    with pytest.raises(ValueError) as info:
        CorrectnessReward(**options)
    assert str(info.value).startswith(message)


def test_gold_answer():
    assert gold_answer(18) == "18"
    assert gold_answer(2.5) == "2.5"
    assert gold_answer(float("nan")) is None
    assert gold_answer(True) is None
    assert gold_answer(r"$\frac{1}{2}$") == "0.5"
    assert gold_answer(r"We get \boxed{\sqrt{2}}.") == r"\sqrt{2}"
    assert gold_answer(r"\sqrt{2}") == r"\sqrt{2}"


def test_trl_reads_the_reward_names():
    trl_utils = pytest.importorskip("trl.trainer.utils")
    from latentrl.rewards import DualReward, FormatReward

    names = [trl_utils.get_callable_name(f) for f in (correctness, FormatReward(), DualReward())]
    assert names == ["correctness", "format", "dual"]


def test_module_level_instance_for_trl():
    assert correctness is correctness_reward
    assert correctness.__name__ == "correctness"
    assert CorrectnessReward.__name__ == "CorrectnessReward"
    assert correctness.num_workers == 0
    copy = pickle.loads(pickle.dumps(correctness))
    assert copy(None, ["#### 1"], answer=["1"]) == [1.0]


# --- process pool --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool_reward():
    with CorrectnessReward(num_workers=2, timeout_s=0.5) as reward:
        yield reward


def test_pool_matches_in_process(pool_reward):
    completions = [
        r"\boxed{\frac{\sqrt{2}}{2}}",
        r"\boxed{2^{4}}",
        "#### 7",
        r"\boxed{x+1}",
        "none",
    ] * 4
    golds = [r"\frac{1}{\sqrt{2}}", "16", "8", "x+2", r"\sqrt{2}"] * 4
    expected = CorrectnessReward()(None, completions, answer=golds)
    assert expected == [1.0, 1.0, 0.0, 0.0, 0.0] * 4
    assert pool_reward(None, completions, answer=golds) == expected
    assert pool_reward._pool is not None  # reused across calls
    pool = pool_reward._pool
    assert pool_reward(None, completions[:2], answer=golds[:2]) == [1.0, 1.0]
    assert pool_reward._pool is pool
    # TRL may pickle reward functions: the copy leaves the pool behind and starts its own.
    copy = pickle.loads(pickle.dumps(pool_reward))
    assert copy._pool is None and copy.num_workers == 2


def test_pool_workers_do_not_import_torch(pool_reward):
    pool = pool_reward._ensure_pool()
    loaded = {
        pool.submit(rewards_helpers.heavy_modules_loaded).result(timeout=60)[0] for _ in range(4)
    }
    assert loaded == {"math_verify"}


def test_pool_timeout_gives_none(pool_reward):
    before = dict(pool_reward.stats)
    start = time.monotonic()
    result = pool_reward(None, ["#### 2", SLOW_COMPLETION, "#### 3"], answer=["2", SLOW_GOLD, "4"])
    assert result == [1.0, None, 0.0]
    assert time.monotonic() - start < 5.0
    assert pool_reward.stats["timeouts"] - before["timeouts"] == 1
    assert pool_reward.stats["pool_restarts"] == before["pool_restarts"]  # the alarm sufficed


def test_stuck_worker_is_abandoned_and_pool_restarted(caplog):
    # A worker whose alarm cannot fire (blocked like C code) must not hang the caller.
    reward = rewards_helpers.HangingCorrectnessReward(
        num_workers=2, timeout_s=0.5, pool_grace_s=1.0
    )
    try:
        completions = [r"\boxed{x+1}", r"\boxed{hang}", r"\boxed{2^{3}}", r"\boxed{y}"]
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="latentrl.rewards.correctness"):
            result = reward(None, completions, answer=["1+x", "1", "8", "z"])
        elapsed = time.monotonic() - start
        assert result == [1.0, None, 1.0, 0.0]
        assert reward.stats == stats(items=4, judged=3, timeouts=1, pool_restarts=1)
        assert 2.0 <= elapsed < 20.0  # stuck after 2 * 0.5 + 1.0 s
        assert [r.getMessage() for r in caplog.records] == [
            "correctness: a worker is stuck; restarting the math-verify process pool",
            "correctness: 1 of 4 items could not be judged (timeout), reward None; "
            "first: item 1: worker stuck past its alarm; pool restarted",
        ]
        # The next call gets a fresh pool.
        assert reward(None, [r"\boxed{2^{3}}"], answer=["8"]) == [1.0]
    finally:
        reward.close()
    assert reward._pool is None


def test_crashing_worker_is_retried_once_then_an_error(caplog):
    reward = rewards_helpers.CrashingCorrectnessReward(num_workers=2)
    try:
        completions = [r"\boxed{x+1}", r"\boxed{crash}", r"\boxed{2^{3}}"]
        with caplog.at_level(logging.WARNING, logger="latentrl.rewards.correctness"):
            result = reward(None, completions, answer=["1+x", "1", "8"])
        assert result == [1.0, None, 1.0]  # the others in flight were retried and judged
        assert reward.stats == stats(items=3, judged=2, errors=1, pool_restarts=2)
        assert [r.getMessage() for r in caplog.records] == [
            "correctness: a worker died; restarting the math-verify process pool",
            "correctness: a worker died; restarting the math-verify process pool",
            "correctness: 1 of 3 items could not be judged (error), reward None; "
            "first: item 1: a worker process died twice on it",
        ]
    finally:
        reward.close()
