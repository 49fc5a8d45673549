"""The recipes' shared parts: the epoch sampler every recipe draws its batches from."""

from __future__ import annotations

import torch

from latentrl.trainers.common import EpochSampler, TrainState


def test_epoch_sampler_draws_every_item_once_an_epoch_and_resumes_exactly():
    items = [f"q{i}" for i in range(10)]
    state = TrainState()
    sampler = EpochSampler(items, torch.Generator().manual_seed(0), state)
    first_epoch = sampler.draw(4) + sampler.draw(4) + sampler.draw(2)
    assert sorted(first_epoch) == sorted(items) and first_epoch != items
    sampler.draw(3)  # into the second epoch, which has its own order
    assert state.position == 3 and sorted(state.order) == list(range(10))

    # A checkpoint keeps the state (order, position) and the generator's state; a new
    # sampler given them draws what the first one draws next, across the epoch boundary too.
    second_epoch = list(state.order)
    saved = TrainState(order=list(state.order), position=state.position)
    generator_state = sampler.generator.get_state()
    expected = sampler.draw(12)
    resumed = EpochSampler(items, torch.Generator(), saved)
    resumed.generator.set_state(generator_state)
    assert resumed.draw(12) == expected
    assert expected[:7] == [items[i] for i in second_epoch[3:]]  # the rest of the second epoch
