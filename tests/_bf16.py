"""Shared by test_train_bf16.py (CPU, default suite) and test_train_bf16_gpu.py (``gpu``): a
short run with the label table in ``model.dtype`` set through the config, and the fp32
log-sum-exp check of the exact softmax, on any device."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from _helpers import planted_sparse
from xmr.data.dataset import XMCDataset
from xmr.train.config import TrainConfig
from xmr.train.loop import Trainer
from xmr.train.run import run_training


EPOCHS = 4
N_TRAIN = 800  # of 1,000 planted points; the other 200 are the test split
#: |P@1(bf16) − P@1(fp32)| on the 200 test points. Measured on CPU (seeds 0-7, presets softmax,
#: sampled, mined: 24 pairs): at most 0.02 (4 points, mined), 0.005 or 0 for softmax and
#: sampled; P@1 itself ≈ 0.88-0.95. A label table that never learns gives P@1 ≈ 0.16.
P1_TOL = 0.04
#: a bf16 run's mean loss per epoch within this relative distance of the fp32 run's (measured
#: on CPU, the same 24 pairs: at most 0.048, mined, whose negatives follow the table; at most
#: 0.004 for softmax and sampled)
LOSS_RTOL = 0.15


def planted_dataset() -> XMCDataset:
    X, Y = planted_sparse(n=1000, D=400, L=120, seed=1)
    return XMCDataset("planted", X[:N_TRAIN], Y[:N_TRAIN], X[N_TRAIN:], Y[N_TRAIN:])


def config(preset: str, dtype: str, device: str = "cpu", seed: int = 0) -> TrainConfig:
    """The run's config, ``model.dtype`` and ``device`` set the way ``xmr train --set`` does."""
    return TrainConfig().with_overrides([
        f"seed={seed}", "eval_every=0", f"device={device}", f"model.dtype={dtype}",
        "model.dim=32", f"optim.epochs={EPOCHS}", "optim.batch_size=64", "optim.lr_table=0.2",
        "optim.lr_encoder=0.01", "data.valid_fraction=0", f"loss.preset={preset}",
        "loss.num_random=16", "miner.k=8", "miner.num_negatives=4", "miner.refresh_every=3",
        "miner.factory=Flat"])


def train(cfg: TrainConfig, ds: XMCDataset, out=None) -> dict:
    """``run_training(cfg)``, recording every step's loss, the label table's dtype and device
    as the step runs and the dtypes of its optimizer's state. Returns the run and the records."""
    losses, dtypes, devices, opt_state = [], set(), set(), set()
    orig = Trainer.train_step

    def recorded(self, rows):
        w = self.model.label_table.weight
        dtypes.add(w.dtype)
        devices.add(w.device.type)
        loss = orig(self, rows)
        losses.append(loss)
        opt_state.update((k, v.dtype) for st in self.opt_tab.state.values()
                         for k, v in st.items())
        return loss

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "train_step", recorded)
        res = run_training(cfg, out, dataset=ds, progress=False)
    steps_per_epoch = len(losses) // EPOCHS
    assert steps_per_epoch * EPOCHS == len(losses)
    epoch_loss = np.asarray(losses).reshape(EPOCHS, steps_per_epoch).mean(axis=1)
    return {"res": res, "losses": losses, "epoch_loss": epoch_loss, "dtypes": dtypes,
            "devices": devices, "opt_state": opt_state, "P@1": res.summary["test"]["P@1"]}


def check_bf16_against_fp32(r32: dict, r16: dict, device: str) -> None:
    """What both the CPU and the GPU test hold a bf16 run to, against the fp32 run."""
    assert r16["dtypes"] == {torch.bfloat16} and r32["dtypes"] == {torch.float32}
    assert r16["devices"] == {device} and r32["devices"] == {device}
    # RowAdagrad's state of a bf16 table: fp32 accumulators and fp32 master rows
    assert r16["opt_state"] == {("sum", torch.float32), ("master", torch.float32)}
    assert r32["opt_state"] == {("sum", torch.float32)}
    model = r16["res"].model
    assert model.label_table.weight.dtype == torch.bfloat16
    assert {p.dtype for p in model.encoder.parameters()} == {torch.float32}
    e16, e32 = r16["epoch_loss"], r32["epoch_loss"]
    assert np.isfinite(r16["losses"]).all()
    assert e16[-1] < 0.25 * e16[0], e16  # it learns
    np.testing.assert_allclose(e16, e32, rtol=LOSS_RTOL)
    assert abs(r16["P@1"] - r32["P@1"]) <= P1_TOL, (r16["P@1"], r32["P@1"])
    assert r16["P@1"] > 0.8


def lse_case(device: str, L: int, seed: int = 0):
    """A bf16 table of ``L`` labels whose logits are all near 0, so that every label carries
    about the same share of the partition function: its log-sum-exp ≈ log L needs an fp32 sum
    (a bf16 running sum, 8 bits of mantissa, drifts by far more than the logits' rounding)."""
    from xmr.models import ShardedLabelTable

    g = torch.Generator().manual_seed(seed)
    d, B = 8, 4
    t = ShardedLabelTable(L, d, num_shards=2, dtype=torch.bfloat16, device=device)
    with torch.no_grad():
        t.weight.copy_(torch.randn(L, d, generator=g).to(torch.bfloat16))
    emb = (torch.randn(B, d, generator=g) * 0.05).to(device)
    ids = torch.randint(0, L, (B,), generator=g).to(device)
    return t, emb, torch.arange(B + 1, device=device), ids, torch.ones(B, device=device)


def float64_lse(t, emb, ids):
    """``(LSE_j z_ij, z_i,y_i)`` per row in float64 from the same bf16 values (the embeddings
    rounded to bf16 as the table's matmul does)."""
    W = t.weight.detach().double().cpu()
    E = emb.detach().to(torch.bfloat16).double().cpu()
    z = E @ W.T
    return torch.logsumexp(z, dim=1), z[torch.arange(z.shape[0]), ids.cpu()]


def bf16_accumulated_lse(t, emb, chunk: int) -> torch.Tensor:
    """What the chunked log-sum-exp would give with a bf16 running sum (for the test's own
    sanity: this is the mistake the check has to catch)."""
    E = emb.to(torch.bfloat16)
    with torch.no_grad():
        m = (E @ t.weight.T).float().amax(dim=1)
        s = torch.zeros(emb.shape[0], dtype=torch.bfloat16, device=emb.device)
        for c0 in range(0, t.num_labels, chunk):
            z = (E @ t.weight[c0:c0 + chunk].T).float()
            s = s + torch.exp(z - m[:, None]).sum(dim=1).to(torch.bfloat16)
    return (m + torch.log(s.float())).double().cpu()


#: |loss − float64 reference| allowed: the logits are rounded to bf16 (|z| < 1, so at most
#: 2^-9 ≈ 2e-3 each, and LSE − z_y moves by at most twice that), the sums are fp32
LSE_ATOL = 4e-3


def check_lse_in_fp32(device: str, L: int, chunk: int = 4096) -> float:
    """The exact softmax of a bf16 table against float64, at ``L`` labels in chunks of
    ``chunk``; returns the largest error."""
    t, emb, indptr, ids, vals = lse_case(device, L)
    loss = t.full_softmax_loss(emb, indptr, ids, vals, chunk_size=chunk, reduction="none")
    assert loss.dtype == torch.float32 and loss.device.type == device
    lse, z_y = float64_lse(t, emb, ids)
    assert bool((lse > np.log(L) - 0.1).all())  # ≈ log L: every label counts
    err = (loss.double().cpu() - (lse - z_y)).abs().max().item()
    assert err < LSE_ATOL, err
    bad = (bf16_accumulated_lse(t, emb, chunk) - lse).abs().max().item()
    assert bad > 10 * LSE_ATOL, bad  # a bf16 running sum would fail the check above
    return err
