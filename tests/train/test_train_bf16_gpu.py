"""bf16 training on CUDA (marker ``gpu``): the CPU checks of test_train_bf16.py on the device.

The same small run (``device=cuda``) in fp32 and in bf16 (``model.dtype=bfloat16``, set through
the config): the bf16 run's per-epoch losses and test P@1 held to the fp32 run's with the
tolerances measured on CPU (``_bf16.P1_TOL``, ``_bf16.LOSS_RTOL``), and the exact softmax's
log-sum-exp of a bf16 table at 4M labels held to float64 (fp32 accumulation). Every code path
here also runs on CPU in the default suite.
"""

from __future__ import annotations


import pytest
import torch

import _bf16  # noqa: E402  (tests/ is on pytest's pythonpath)

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _need_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


@pytest.fixture(scope="module")
def ds():
    return _bf16.planted_dataset()


@pytest.mark.parametrize("preset", ["softmax", "sampled", "mined"])
def test_cuda_bf16_training_is_close_to_fp32(ds, tmp_path, preset):
    r32 = _bf16.train(_bf16.config(preset, "float32", device="cuda"), ds)
    r16 = _bf16.train(_bf16.config(preset, "bfloat16", device="cuda"), ds, out=tmp_path / "run")
    _bf16.check_bf16_against_fp32(r32, r16, "cuda")
    from xmr.models import XMRModel

    back = XMRModel.load(tmp_path / "run" / "model", device="cuda")
    assert back.label_table.weight.dtype == torch.bfloat16
    s, i = back.predict(ds.X_tst, 5)
    assert s.dtype.name == "float32" and i.shape == (ds.X_tst.shape[0], 5)


def test_cuda_bf16_lse_is_accumulated_in_fp32():
    """At 2^22 labels a bf16 running sum would be far off (see _bf16.check_lse_in_fp32)."""
    _bf16.check_lse_in_fp32("cuda", 1 << 22)
