"""Negatives: samplers with exact expected counts, the assembly of a batch's shared candidate
set with its sampled-logit correction (DESIGN.md §5–6), and :class:`CandidateSources`, the one
owner of a training batch's candidates P ∪ T ∪ H ∪ R.

The hard-negative miner lives in :mod:`xmr.negatives.miner` (imported on demand: it needs
faiss); the FAISS label index it searches is :class:`xmr.index.LabelIndex`. Importing this
package imports numpy only; the Numba kernels compile on first use.
"""

from xmr.negatives.candidates import MASK_VALUE, CandidateBatch, assemble_batch
from xmr.negatives.samplers import (
    SAMPLERS,
    LogUniformSampler,
    Sampler,
    UniformSampler,
    UnigramSampler,
    log_expected_count,
    make_sampler,
)
from xmr.negatives.sources import Candidates, CandidateSources

__all__ = [
    "MASK_VALUE", "CandidateBatch", "assemble_batch",
    "SAMPLERS", "Sampler", "UniformSampler", "LogUniformSampler", "UnigramSampler",
    "log_expected_count", "make_sampler", "CandidateSources", "Candidates",
]
