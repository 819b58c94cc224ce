"""3b's attacks: PGD on cross-entropy and APGD-DLR on the margin, on vectors and signals."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torchattacks")
pytest.importorskip("sklearn")

from hem_plugins.benchmark.models import build_model  # noqa: E402
from hem_plugins.benchmark.tasks import TASKS  # noqa: E402
from hem_plugins.benchmark.tasks.adversarial import (  # noqa: E402
    ATTACKS,
    MARGIN_ATTACK,
    accuracy_under,
    attacks,
    claim_eps,
    survival,
)
from hem_plugins.benchmark.tasks.base import Context  # noqa: E402

SETTINGS = {"pgd_steps": 3, "apgd_steps": 3}


def _model(kind: str):
    """A model of the suite on 64-pixel vectors (MLP) or 40-sample signals (1-D CNN),
    briefly fitted so that its accuracy is neither 0 nor 1, in eval mode."""
    torch.manual_seed(0)
    length = 64 if kind == "mlp" else 40
    x = torch.rand(300, length)
    y = (x[:, : length // 2].sum(1) > x[:, length // 2 :].sum(1)).long() + 2 * (x[:, 0] > 0.5)
    model = build_model(x, 4, kind=kind, hidden=(16,), channels=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, x[:100], y[:100]


@pytest.mark.parametrize("kind", ["mlp", "cnn1d"])
def test_attacks_at_eps_0_keep_clean_accuracy_and_the_model_in_eval_mode(kind):
    model, x, y = _model(kind)
    clean = accuracy_under(None, model, x, y, "cpu")
    assert 0.0 < clean < 1.0
    found = []
    for name, attack, as_image in attacks(model, 0.0, SETTINGS, 0, tuple(x.shape[1:])):
        found.append(name)
        assert accuracy_under(attack, model, x, y, "cpu", as_image) == clean, name
        # torchattacks restores the wrapped module's mode after each attack: BatchNorm must
        # still use its running statistics
        assert not model.training, name
    assert found == list(ATTACKS)
    for name, attack, as_image in attacks(model, 0.1, SETTINGS, 0, tuple(x.shape[1:])):
        assert 0.0 <= accuracy_under(attack, model, x, y, "cpu", as_image) <= 1.0, name


def test_apgd_dlr_is_repeatable_with_its_seed():
    model, x, y = _model("mlp")
    runs = []
    for _ in range(2):
        (_, attack, as_image) = attacks(model, 0.05, SETTINGS, 3, (64,))[-1]
        runs.append(accuracy_under(attack, model, x, y, "cpu", as_image))
    assert runs[0] == runs[1]


@pytest.mark.slow
def test_records_hold_every_attack_at_every_eps_and_the_verdict_rows():
    settings = {
        "datasets": ["digits"],
        "train": {"epochs": 2, "batch_size": 128, "lr": {"ce": 0.1, "default": 0.01}},
        "model": {"hidden": (32,)},
        "losses": ["ce", "hem"],
        "eps": [0.0, 0.05],
        "claim_eps": 0.05,
        "pgd_steps": 2,
        "apgd_steps": 2,
        "max_eval": 100,
    }
    task = TASKS["adversarial"]
    recs = task.run_seed(settings, 1, Context())["records"]
    groups = {(r["group"]["loss"], r["group"]["attack"], r["group"]["eps"]) for r in recs}
    expected = {(loss, "clean", 0.0) for loss in settings["losses"]}
    expected |= {(loss, a, e) for loss in settings["losses"] for a in ATTACKS
                 for e in settings["eps"]}  # fmt: skip
    assert groups == expected and len(recs) == len(expected)
    for r in recs:
        assert 0.0 <= r["metrics"]["acc"] <= 1.0 and "train_acc" in r["metrics"], r["group"]
    clean = {
        r["group"]["loss"]: r["metrics"]["acc"] for r in recs if r["group"]["attack"] == "clean"
    }
    for r in recs:  # at eps 0 no attack moves the input
        if r["group"]["eps"] == 0.0:
            assert r["metrics"]["acc"] == pytest.approx(clean[r["group"]["loss"]]), r["group"]
    result = {"settings": settings, "seeds": [1], "per_seed": {"1": {"records": recs}}}
    assert claim_eps(result) == 0.05
    titles = [title for title, _ in task.summary(result)]
    assert titles == [
        "3b HEM is more robust than CE (PGD accuracy, ε=0.05)",
        f"3b HEM is more robust than CE ({MARGIN_ATTACK} accuracy, ε=0.05)",
    ]
    surv = survival(result)
    assert set(surv) == {("digits", "PGD"), ("digits", MARGIN_ATTACK)}
    assert all(set(per) == {0.0, 0.05} for per in surv.values())


def test_claim_eps_of_results_without_the_setting():
    def result(eps):
        recs = [{"group": {"attack": "PGD", "eps": e}, "metrics": {"acc": 0.5}} for e in eps]
        return {"settings": {}, "per_seed": {"0": {"records": recs}}}

    assert claim_eps(result([0.02, 0.05, 0.1])) == 0.05  # the middle, as before claim_eps
    assert claim_eps(result([])) is None
    r = result([0.01, 0.04, 0.1, 0.3])
    r["settings"]["claim_eps"] = 0.05
    assert claim_eps(r) == 0.04  # the nearest measured
