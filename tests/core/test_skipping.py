"""Tracking and revisiting logic of hem_plugins.skipping, and a plain training loop."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from hem_plugins import HEMLoss, settled_mask
from hem_plugins.skipping import (
    IndexedDataset,
    SettledTracker,
    SkipSettledSampler,
    pad_settled,
    recheck,
)


def settle(tracker, indices, flag=True):
    idx = torch.as_tensor(indices)
    tracker.update(idx, torch.full((idx.numel(),), flag))


def test_tracker_update_and_passes():
    t = SettledTracker(5)
    assert t.plan().all()  # never seen: everything is presented
    settle(t, [0, 1, 2])
    settle(t, [2], flag=False)
    assert t.settled.tolist() == [True, True, False, False, False]
    assert t.passes.tolist() == [1, 1, 2, 0, 0]
    assert t.last_seen.tolist() == [0, 0, 0, -1, -1]
    assert t.num_settled == 2 and t.fraction_settled == pytest.approx(0.4)
    t.resize(7)
    assert len(t) == 7 and t.last_seen[-1] == -1 and not t.settled[-1]
    t.resize(3)  # never shrinks
    assert len(t) == 7


def test_revisit_every_and_regression_is_caught():
    t = SettledTracker(3)
    settle(t, [0, 1, 2])  # epoch 0: all settled
    presented = {}
    for epoch in range(1, 8):
        t.epoch = epoch
        plan = t.plan(revisit_every=3)
        presented[epoch] = torch.nonzero(plan).flatten().tolist()
        if epoch == 3:  # the revisit: sample 1 has regressed, the others are still settled
            assert presented[3] == [0, 1, 2]
            t.update(torch.tensor([0, 1, 2]), torch.tensor([True, False, True]))
        elif presented[epoch]:
            idx = torch.tensor(presented[epoch])
            # sample 1 settles again at epoch 5
            t.update(idx, (idx != 1) | torch.tensor(epoch >= 5))
    assert presented[1] == presented[2] == []
    assert presented[4] == [1] and presented[5] == [1]  # caught, presented until it settles
    assert presented[6] == [0, 2]  # three epochs after the revisit of epoch 3
    assert presented[7] == []


def test_revisit_prob_is_a_probability_per_sample_and_epoch():
    t = SettledTracker(20_000)
    settle(t, torch.arange(20_000))
    t.epoch = 1
    gen = torch.Generator().manual_seed(0)
    frac = t.plan(revisit_every=None, revisit_prob=0.1, generator=gen).float().mean()
    assert abs(float(frac) - 0.1) < 0.01
    assert not t.plan(revisit_every=None, revisit_prob=0.0).any()
    assert t.plan(revisit_every=1).all()  # revisit_every=1 skips nothing


def test_bad_arguments_are_named():
    t = SettledTracker(3)
    with pytest.raises(ValueError, match="revisit_every"):
        t.plan(revisit_every=0)
    with pytest.raises(ValueError, match="revisit_prob"):
        SkipSettledSampler(t, revisit_prob=1.5)
    with pytest.raises(IndexError, match="holds 3 samples"):
        settle(t, [3])
    with pytest.raises(ValueError, match="one to one"):
        t.update(torch.tensor([0, 1]), torch.tensor([True]))
    with pytest.raises(TypeError, match="integers"):
        t.update(torch.tensor([0.0]), torch.tensor([True]))
    with pytest.raises(TypeError, match="SettledTracker"):
        SkipSettledSampler([0, 1])
    with pytest.raises(KeyError, match="lacks"):
        t.load_state_dict({"settled": torch.zeros(3)})


def test_sampler_epochs_len_and_determinism():
    t = SettledTracker(10)
    s = SkipSettledSampler(t, revisit_every=2, seed=3)
    assert len(s) == 10
    first = list(s)
    assert sorted(first) == list(range(10)) and s.epoch == 0 and t.epoch == 0
    settle(t, [1, 3, 5])
    assert len(s) == 7  # the next epoch's plan
    second = list(s)
    assert s.epoch == 1 and sorted(second) == [0, 2, 4, 6, 7, 8, 9]
    assert len(s) == 10  # epoch 2: the samples settled at epoch 0 are due again
    # same seed, same tracker state, same epoch: same order
    t2 = SettledTracker(10)
    s2 = SkipSettledSampler(t2, revisit_every=2, seed=3)
    assert list(s2) == first
    s.set_epoch(3)  # jump to epoch 3: still all due
    assert sorted(s) == list(range(10)) and s.epoch == 3
    # state_dict round trip
    s3 = SkipSettledSampler(SettledTracker(), seed=0)
    s3.load_state_dict(s.state_dict())
    assert s3.epoch == 3 and torch.equal(s3.tracker.settled, t.settled)


def test_empty_epoch_when_all_settled():
    t = SettledTracker(4)
    s = SkipSettledSampler(t, revisit_every=None)
    settle(t, range(4))
    loader = DataLoader(IndexedDataset(TensorDataset(torch.zeros(4, 2))), sampler=s, batch_size=2)
    assert len(loader) == 0 and list(loader) == []


def test_indexed_dataset():
    base = TensorDataset(torch.arange(6.0).reshape(3, 2), torch.tensor([7, 8, 9]))
    x, y, i = next(iter(DataLoader(IndexedDataset(base), batch_size=3)))
    assert i.tolist() == [0, 1, 2] and y.tolist() == [7, 8, 9]
    assert IndexedDataset([10, 11])[1] == (11, 1)


def test_plain_loop_skips_settled_and_catches_regression():
    """A linear model on separable data: samples settle, later epochs present fewer of them,
    and a sample pushed back across the margin is caught at its revisit."""
    gen = torch.Generator().manual_seed(0)
    n = 256
    y = torch.randint(0, 3, (n,), generator=gen)
    x = torch.nn.functional.one_hot(y, 3).float() * 3 + 0.3 * torch.randn(n, 3, generator=gen)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 3)
    crit = HEMLoss(margin=1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    tracker = SettledTracker(n)
    sampler = SkipSettledSampler(tracker, revisit_every=3, seed=0)
    loader = DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=32, sampler=sampler)
    per_epoch = []
    for _ in range(12):
        count = 0
        for xb, yb, idx in loader:
            logits = model(xb)
            loss = crit(logits, yb)
            tracker.observe(idx, logits, yb, crit.margins)
            opt.zero_grad()
            loss.backward()
            opt.step()
            count += idx.numel()
        per_epoch.append(count)
    assert per_epoch[0] == n
    assert tracker.fraction_settled > 0.9
    assert min(per_epoch[1:]) < n // 4  # most of the data is skipped in some epochs
    assert int(tracker.passes.sum()) == sum(per_epoch) < 12 * n * 0.6

    # The model regresses on one settled sample (its class weights are disturbed).
    with torch.no_grad():
        victim = int(torch.nonzero(tracker.settled).flatten()[0])
        last_seen = int(tracker.last_seen[victim])
        model.bias[y[victim]] -= 100.0
        assert not settled_mask(model(x[victim : victim + 1]), y[victim : victim + 1], 1.0).item()
    seen_at = None
    for epoch in range(sampler.epoch + 1, sampler.epoch + 5):
        sampler.set_epoch(epoch)
        for xb, yb, idx in loader:
            with torch.no_grad():  # observe only: the regression must be noticed
                tracker.observe(idx, model(xb), yb, crit.margins)
            if victim in idx.tolist() and seen_at is None:
                seen_at = epoch
    assert seen_at is not None and seen_at <= last_seen + 3  # revisit_every=3
    assert not tracker.settled[victim]  # now unsettled: presented every epoch from here on
    assert victim in list(sampler)


@pytest.mark.parametrize("margin", [1.0, torch.tensor([0.5, 1.0, 2.0, 1.5])])
def test_pad_settled_gives_the_full_batch_loss_and_gradient(margin):
    """Rows left out of a batch because they are settled, replaced by placeholders: the HEM
    loss and the gradient of the rows presented are those of the full batch (the threshold
    counts every row); without the placeholders they differ (a higher threshold)."""
    torch.manual_seed(0)
    logits = torch.randn(12, 4) * 2
    target = torch.randint(0, 4, (12,))
    # settle rows 0..6: their target logit beats every other by more than any margin
    logits[:7, :] = 0.0
    logits[torch.arange(7), target[:7]] = 5.0
    crit = HEMLoss(margin=margin) if isinstance(margin, float) else None
    mu = margin

    def loss_of(x, y):
        if crit is not None:
            return crit(x, y)
        from hem_plugins import hem_loss

        return hem_loss(x, y, mu)

    assert settled_mask(logits, target, mu)[:7].all()
    assert not settled_mask(logits, target, mu)[7:].all()
    full = logits.clone().requires_grad_(True)
    loss_full = loss_of(full, target)
    loss_full.backward()
    rest = logits[7:].clone().requires_grad_(True)
    x, y = pad_settled(rest, target[7:], 7, mu)
    assert x.shape == (12, 4) and y.shape == (12,)
    assert settled_mask(x[5:].detach(), y[5:], mu).all()  # the placeholders are settled
    loss = loss_of(x, y)
    loss.backward()
    torch.testing.assert_close(loss, loss_full)
    torch.testing.assert_close(rest.grad, full.grad[7:])
    unpadded = logits[7:].clone().requires_grad_(True)
    assert not torch.allclose(loss_of(unpadded, target[7:]), loss_full)


def test_pad_settled_edge_cases():
    x, y = torch.randn(3, 5), torch.tensor([0, 1, 2])
    assert pad_settled(x, y, 0, 1.0)[0] is x
    with pytest.raises(ValueError, match="count must be >= 0"):
        pad_settled(x, y, -1, 1.0)
    with pytest.raises(ValueError, match=r"\(N, C\) logits"):
        pad_settled(x.reshape(3, 5, 1), y, 2, 1.0)
    empty, ey = pad_settled(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long), 4, 2.0)
    assert empty.shape == (4, 5) and settled_mask(empty, ey, 2.0).all()
    assert float(HEMLoss(margin=2.0)(empty, ey)) == 0.0
    # masked units (Avalanche's -1000) stay masked, and the row stays settled
    m = torch.tensor([[0.3, -1000.0, 0.1, -1000.0, 0.2]])
    pm, py = pad_settled(m, torch.tensor([0]), 2, 1.0)
    assert (pm[1:, [1, 3]] == -1000.0).all() and settled_mask(pm[1:], py[1:], 1.0).all()


def test_recheck_presents_rows_that_are_no_longer_settled():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5))
    model.train()
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(3) * 4)
        model[0].bias.zero_()
    x = torch.eye(3).repeat(2, 1)  # rows 0..5, logits 4 * one-hot(i % 3)
    y = torch.tensor([0, 1, 2, 1, 1, 0])  # rows 0, 1, 2 settled at margin 1; rows 3, 5 not
    keep = torch.tensor([False, False, True, False, True, False])
    seen = []

    def forward(rows):
        seen.append(rows.clone())
        assert not model.training  # eval mode during the check: no dropout
        return model(x[rows])

    new, n = recheck(keep, forward, y, 1.0, model=model)
    assert n == 4 and seen[0].tolist() == [True, True, False, True, False, True]
    assert new.tolist() == [False, False, True, True, True, True]
    assert keep.tolist() == [False, False, True, False, True, False]  # not modified
    assert model.training  # mode restored
    same, n = recheck(torch.ones(6, dtype=torch.bool), forward, y, 1.0)
    assert n == 0 and same.all() and len(seen) == 1  # nothing skipped: no forward
