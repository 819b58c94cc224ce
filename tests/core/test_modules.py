"""HEMLoss / HEMPlusLoss modules: margins in buffers, fallbacks, online counts, state_dict."""

from __future__ import annotations

import os
import re
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hem_plugins import (
    FALLBACK_MARGIN,
    HEMLoss,
    HEMPlusLoss,
    class_margins,
    hem_loss,
    margin_for_dataset,
)


def batch(n=16, c=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=gen), torch.randint(0, c, (n,), generator=gen)


def test_hem_module_equals_functional():
    x, t = batch()
    crit = HEMLoss(margin=0.3, class_weight=[1, 2, 1, 1, 0.5])
    want = hem_loss(x, t, 0.3, class_weight=torch.tensor([1, 2, 1, 1, 0.5]))
    torch.testing.assert_close(crit(x, t), want)
    torch.testing.assert_close(
        crit(x, t, reduction="sum"),
        hem_loss(x, t, 0.3, reduction="sum", class_weight=crit.class_weight),
    )


def test_hem_set_num_samples_and_fallback_warning():
    x, t = batch()
    crit = HEMLoss()
    with pytest.warns(UserWarning, match="fallback margin"):
        crit(x, t)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        crit(x, t)  # warns once only
    assert float(crit.margins) == FALLBACK_MARGIN
    crit.set_num_samples(50_000)
    assert float(crit.margins) == pytest.approx(0.2)
    torch.testing.assert_close(crit(x, t), hem_loss(x, t, margin_for_dataset(50_000)))


def test_hem_state_dict_round_trip():
    crit = HEMLoss()
    crit.set_num_samples(1437)
    fresh = HEMLoss()
    fresh.load_state_dict(crit.state_dict())
    assert float(fresh.margins) == float(crit.margins)
    assert bool(fresh.margin_is_set) and float(fresh.num_samples) == 1437


def test_hem_plus_margins_from_counts_and_num_samples():
    counts = [5000, 300, 0, 1200]
    crit = HEMPlusLoss(class_counts=counts)
    torch.testing.assert_close(crit.margins, class_margins(counts))
    # Pixel counts rescaled to image-equivalents.
    seg = HEMPlusLoss(class_counts=[6e6, 3e6, 1e6], num_samples=100)
    torch.testing.assert_close(seg.margins, class_margins([60.0, 30.0, 10.0]))
    x, t = batch(c=4)
    torch.testing.assert_close(crit(x, t), hem_loss(x, t, class_margins(counts)))


def test_hem_plus_state_dict_into_a_fresh_loss_without_counts():
    crit = HEMPlusLoss(class_counts=[10, 20, 30], num_samples=6)
    fresh = HEMPlusLoss()
    fresh.load_state_dict(crit.state_dict())
    torch.testing.assert_close(fresh.margins, crit.margins)
    torch.testing.assert_close(fresh.class_counts, crit.class_counts)
    assert not bool(fresh.online)
    x, t = batch(c=3)
    torch.testing.assert_close(fresh(x, t), crit(x, t))


@pytest.mark.parametrize(
    "build, checkpoint, mine, theirs",
    [
        (
            lambda: HEMPlusLoss(class_counts=[1, 2]),
            lambda: HEMPlusLoss(class_counts=[1, 2, 3]),
            "2 classes (its class_counts)",
            "class_counts has 3",
        ),
        (
            lambda: HEMPlusLoss(class_counts=[1, 2, 3, 4]),
            lambda: HEMPlusLoss(class_weight=[1.0, 2.0]),
            "4 classes (its class_counts)",
            "class_weight has 2",
        ),
        (
            lambda: HEMPlusLoss(class_weight=[1.0, 1.0, 1.0]),
            lambda: HEMPlusLoss(class_counts=[5, 5]),
            "3 classes (its class_weight)",
            "class_counts has 2",
        ),
        (
            lambda: HEMLoss(margin=0.5, class_weight=[1.0, 2.0, 3.0]),
            lambda: HEMLoss(margin=0.5, class_weight=[1.0, 2.0]),
            "3 classes (its class_weight)",
            "class_weight has 2",
        ),
    ],
)
def test_a_checkpoint_of_another_class_count_is_refused_at_load(build, checkpoint, mine, theirs):
    # It used to load silently and fail only at the next forward.
    crit, other = build(), checkpoint()
    before = {k: v.clone() for k, v in crit.state_dict().items()}
    message = re.escape(f"{type(crit).__name__} is built for {mine}")
    with pytest.raises(RuntimeError, match=message) as err:
        crit.load_state_dict(other.state_dict())
    assert theirs in str(err.value)
    with pytest.raises(RuntimeError, match="is built for"):
        crit.load_state_dict(other.state_dict(), strict=False)
    after = crit.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_a_loss_with_no_class_set_takes_the_checkpoints():
    # Resume: a loss built with no counts (learned online, or set later by the Avalanche
    # plugin or the mmseg hook) takes the checkpoint's counts, whatever their number.
    trained = HEMPlusLoss(num_samples=500)
    x, t = batch(n=50, c=4)
    with pytest.warns(UserWarning):
        trained(x, t)
    online = HEMPlusLoss(num_samples=500)
    with pytest.warns(UserWarning):
        online(*batch(n=50, c=3))  # counts of 3 classes, learned online: they follow the head
    for fresh in (HEMPlusLoss(), online, HEMPlusLoss(class_counts=[1, 2, 3, 4])):
        fresh.load_state_dict(trained.state_dict())
        torch.testing.assert_close(fresh.class_counts, trained.class_counts)
        torch.testing.assert_close(fresh.margins, trained.margins)
    hem = HEMLoss(margin=0.3)
    hem.load_state_dict(HEMLoss(margin=0.7).state_dict())
    assert float(hem.margins) == pytest.approx(0.7)


def test_modules_check_a_tensor_avg_factor():
    x, t = batch(c=3)
    for crit in (HEMLoss(margin=0.5), HEMPlusLoss(class_counts=[1, 2, 3])):
        with pytest.raises(ValueError, match="avg_factor must be finite"):
            crit(x, t, avg_factor=torch.tensor(float("nan")))
        torch.testing.assert_close(
            crit(x, t, avg_factor=torch.tensor(4.0)), crit(x, t, reduction="sum") / 4
        )


def test_hem_plus_online_counts_follow_the_labels():
    crit = HEMPlusLoss()
    assert bool(crit.online)
    x, t = batch(n=64, c=4)
    t[:40] = 0
    with pytest.warns(UserWarning, match="online"):
        crit(x, t)
    torch.testing.assert_close(crit.class_counts, torch.bincount(t, minlength=4).double())
    freq = crit.class_counts / crit.class_counts.sum()
    # Unknown dataset size: balanced classes would get the fallback margin.
    torch.testing.assert_close(crit.margins, class_margins(freq * crit.scale / FALLBACK_MARGIN**2))
    crit.set_num_samples(1000)
    torch.testing.assert_close(crit.margins, class_margins(freq * 1000))
    crit(x, t)
    torch.testing.assert_close(crit.class_counts, 2 * torch.bincount(t, minlength=4).double())
    crit.eval()
    crit(x, t)  # evaluation does not count
    torch.testing.assert_close(crit.class_counts, 2 * torch.bincount(t, minlength=4).double())


def test_hem_plus_online_counts_survive_state_dict():
    crit = HEMPlusLoss(num_samples=500)
    x, t = batch(n=50, c=3)
    with pytest.warns(UserWarning):
        crit(x, t)
    resumed = HEMPlusLoss(num_samples=500)
    resumed.load_state_dict(crit.state_dict())
    torch.testing.assert_close(resumed.class_counts, crit.class_counts)
    torch.testing.assert_close(resumed.margins, crit.margins)
    with pytest.warns(UserWarning):
        resumed(x, t)
    crit(x, t)
    torch.testing.assert_close(resumed.class_counts, crit.class_counts)


def test_hem_plus_online_ignores_ignore_index_and_warns_with_no_labels():
    crit = HEMPlusLoss(ignore_index=255)
    x = torch.randn(2, 3, 4, 4)
    t = torch.full((2, 4, 4), 255)
    with pytest.warns(UserWarning):
        assert crit(x, t).item() == 0.0
    assert float(crit.class_counts.sum()) == 0
    t[0, 0, :2] = 1
    crit(x, t)
    assert crit.class_counts.tolist() == [0.0, 2.0, 0.0]


def test_ignore_index_per_call_overrides_the_modules_for_that_call_only():
    x = torch.randn(6, 3)
    t = torch.tensor([0, 1, 2, 7, 7, 1])
    crit = HEMLoss(margin=0.5)  # ignore_index -100
    torch.testing.assert_close(crit(x, t, ignore_index=7), hem_loss(x, t, 0.5, ignore_index=7))
    assert crit.ignore_index == -100
    with pytest.raises(ValueError, match="outside"):  # 7 is a class index again
        crit(x, t)
    with pytest.raises(TypeError, match="ignore_index"):
        crit(x, t, ignore_index=7.0)


def test_buffers_follow_the_module_device_and_dtype():
    crit = HEMPlusLoss(class_counts=[1, 2])
    names = dict(crit.named_buffers())
    assert {"margin", "class_counts", "num_samples", "online"} <= set(names)
    assert crit.to(torch.float64).class_counts.dtype == torch.float64


def _online_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        crit = HEMPlusLoss(num_samples=100)
        gen = torch.Generator().manual_seed(rank)  # different labels on each rank
        for _ in range(3):
            t = torch.randint(0, 4 + rank, (32,), generator=gen).clamp(max=4)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                crit(torch.randn(32, 5), t)
        out[rank] = crit.margins.clone()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_online_counts_are_all_reduced_across_ranks():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_online_worker, args=(2, port, out), nprocs=2, join=True)
    assert set(out.keys()) == {0, 1}
    torch.testing.assert_close(out[0], out[1])


@pytest.mark.parametrize("cls", [HEMLoss, HEMPlusLoss])
def test_modules_leave_avalanche_masked_units_out_by_default(cls):
    x, t = batch(n=20, c=4)
    masked = torch.cat([x, torch.full((20, 3), -1000.0)], dim=1)
    crit = cls(margin=0.5) if cls is HEMLoss else cls(class_counts=[5, 5, 5, 5, 0, 0, 0])
    active = cls(margin=0.5) if cls is HEMLoss else cls(class_counts=[5, 5, 5, 5])
    torch.testing.assert_close(crit(masked, t), active(x, t))
    counted = (
        cls(margin=0.5, mask_value=None)
        if cls is HEMLoss
        else cls(class_counts=[5, 5, 5, 5, 0, 0, 0], mask_value=None)
    )
    assert not torch.allclose(counted(masked, t), active(x, t))


def test_hem_plus_online_counts_grow_with_the_head():
    crit = HEMPlusLoss(num_samples=100)
    x, t = batch(n=30, c=3)
    with pytest.warns(UserWarning):
        crit(x, t)
    first = crit.class_counts.clone()
    x5, t5 = batch(n=30, c=5, seed=1)
    crit(x5, t5)  # the head grew from 3 to 5 units
    want = torch.cat([first, torch.zeros(2, dtype=torch.float64)]) + torch.bincount(t5, minlength=5)
    torch.testing.assert_close(crit.class_counts, want)
    assert crit.margins.shape == (5,)
    fixed = HEMPlusLoss(class_counts=[1, 2, 3])
    with pytest.raises(ValueError, match="counts for 3 classes"):
        fixed(x5, t5)
