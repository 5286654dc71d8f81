"""Configuration of the unified loss family and its named presets (DESIGN.md §5).

Every preset is a setting of the same :class:`LossConfig`; the code path is one
(:mod:`xmr.objectives.loss`). A field left at ``None`` takes the preset's value.

=====================  =====================  ======================  ===========================
preset                 targets a(x)           candidates A(x)         known as
=====================  =====================  ======================  ===========================
``softmax``            y                      all labels              full softmax cross-entropy
``sampled``            y                      P ∪ R, logQ-corrected   sampled softmax
``mined``              y                      P ∪ H ∪ R               hard-negative mining
``distill``            (1−α)y + α·q^t         all labels              standard distillation
``teacher-negatives``  y                      P ∪ T ∪ R               teacher-chosen negatives
``double-distill``     (1−α)y + α·q^t         P ∪ T ∪ H ∪ R           the unified objective
=====================  =====================  ======================  ===========================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from xmr.errors import ConfigError  # noqa: E402
from xmr.utils.config import ConfigBase
from xmr.utils.validation import check_choice

PROPOSALS = ("uniform", "log-uniform", "unigram")


@dataclass
class LossConfig(ConfigBase):
    """The loss section (a :class:`~xmr.utils.config.ConfigBase`): read strictly (unknown keys,
    types); its values are checked when it is :meth:`resolved`, since ``None`` means "the
    preset's value"."""

    preset: str = "double-distill"
    all_labels: Optional[bool] = None  #: A = all labels (exact sharded softmax) instead of a candidate set
    alpha: Optional[float] = None  #: weight of the teacher distribution in the targets
    tau_t: Optional[float] = None  #: teacher temperature (q^t = softmax(t / tau_t))
    tau_s: Optional[float] = None  #: student temperature (s' = s / tau_s − b)
    teacher_k: Optional[int] = None  #: how many of the teacher's top labels enter T(x) and q^t
    teacher_negatives: Optional[bool] = None  #: T(x) ⊂ A(x)
    mined: Optional[bool] = None  #: H(x) ⊂ A(x), from the FAISS miner
    num_random: Optional[int] = None  #: |R|, random negatives shared by the batch
    proposal: Optional[str] = None  #: uniform | log-uniform | unigram
    proposal_beta: Optional[float] = None  #: exponent of the unigram proposal
    unique_sampling: Optional[bool] = None  #: draw R without replacement (tries-based log E[count])
    correct_positives: Optional[bool] = None  #: subtract the offset from positive columns too
    share_columns: Optional[bool] = None  #: a row also sees the other rows' candidates (in-batch)
    #: multilabel reduction (Menon et al. 2019, *Multilabel reductions*): "pal-n" (targets
    #: uniform over the positives, one shared softmax; recall@k-consistent), "pal" (one softmax
    #: term of weight 1 per positive; precision@k-consistent) or "decoupled" (DEXML: each
    #: positive's denominator excludes the row's other positives, averaged over the positives)
    #: or "ova" (one-versus-all: a binary logistic loss per label over all labels or over the
    #: candidates, sampled negatives importance-weighted by 1/E[count]; precision@k-consistent;
    #: Renée's and the linear one-vs-all methods' loss; teacher targets are per-label
    #: probabilities)
    reduction: Optional[str] = None
    #: with reduction="decoupled": "decoupled" (default: the teacher's labels compete with the
    #: row's negatives only, so a teacher label never pushes a true positive down; its mass on a
    #: positive joins that positive's decoupled term) or "shared" (the teacher part α·CE(q^t)
    #: over one softmax of all candidates). Chosen on validation (benchmarks/studies/tune_teacher.py:
    #: tree teacher, α = 0.5: 0.729 vs 0.707 P@1)
    teacher_term: Optional[str] = None
    #: weight λ of the GLaS regulariser (Guo et al., NeurIPS 2019, *Breaking the Glass Ceiling
    #: for Embedding-Based Classifiers for Large Output Spaces*): λ·mean over the batch's positive
    #: labels S of (⟨w_a, w_b⟩ − ½ C_ab (1/C_aa + 1/C_bb))², C the training label co-occurrence;
    #: 0 = off. Single process only.
    glas: Optional[float] = None

    def resolved(self) -> "LossConfig":
        """Fill every ``None`` field from the preset; raise on an unknown preset or bad value.

        Computed once per config: the result is remembered (keyed by the current field
        values, so a changed field is resolved anew) and marked resolved, and ``resolved()`` on
        it returns it unchanged. A run (the CLI's early check, :func:`~xmr.train.run.run_training`,
        the :class:`~xmr.train.loop.Trainer`, the :class:`~xmr.negatives.sources.CandidateSources`
        and :class:`~xmr.objectives.loss.UnifiedObjective` it builds) therefore shares one
        resolved object. It is read-only (setting a field raises AttributeError);
        :func:`dataclasses.replace` gives an unresolved copy.
        """
        if self.is_resolved:
            return self
        key = tuple((type(getattr(self, f.name)), getattr(self, f.name))
                    for f in dataclasses.fields(self))
        cached = self.__dict__.get("_resolved_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown loss preset {self.preset!r}; valid presets: {', '.join(PRESETS)}")
        base = {**_DEFAULTS, **PRESETS[self.preset]}
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for k, v in values.items():
            if v is None:
                values[k] = base[k]
        out = LossConfig(**values)
        out._check_values()
        out.__dict__["_resolved"] = True  # not fields: to_dict / == ignore both
        self.__dict__["_resolved_cache"] = (key, out)
        return out

    def __setattr__(self, name, value):
        if self.__dict__.get("_resolved"):
            raise AttributeError(f"a resolved LossConfig is read-only (it is shared by the run); "
                                 f"set {name!r} on the unresolved config and resolve it again")
        object.__setattr__(self, name, value)

    @property
    def is_resolved(self) -> bool:
        """Whether this object came from :meth:`resolved` (every field set and validated)."""
        return bool(self.__dict__.get("_resolved", False))

    def validate(self, prefix: str = "loss.") -> "LossConfig":
        """What :meth:`from_dict` checks after the types: nothing more on an unresolved config
        (its ``None`` fields are the preset's; :meth:`resolved` checks the values), every value
        on a resolved one."""
        if self.is_resolved:
            self._check_values()
        return self

    def _check_values(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"loss.alpha must be in [0, 1], got {self.alpha}")
        if self.tau_t <= 0 or self.tau_s <= 0:
            raise ConfigError(f"temperatures must be > 0, got tau_t={self.tau_t}, tau_s={self.tau_s}")
        from xmr.objectives.targets import REDUCTIONS, TEACHER_TERMS

        check_choice("loss.reduction", self.reduction, REDUCTIONS)
        check_choice("loss.teacher_term", self.teacher_term, TEACHER_TERMS)
        if not self.glas >= 0.0:
            raise ConfigError(f"loss.glas: expected a weight >= 0, got {self.glas}")
        if self.proposal not in PROPOSALS:
            raise ConfigError(f"unknown proposal {self.proposal!r}; valid: {', '.join(PROPOSALS)}")
        if self.num_random < 0 or self.teacher_k < 0:
            raise ConfigError("loss.num_random and loss.teacher_k must be >= 0")
        if not self.all_labels and not (self.num_random or self.mined or self.teacher_negatives
                                        or self.share_columns):
            raise ConfigError("a candidate-set loss needs negatives: set num_random > 0, mined, "
                             "teacher_negatives or share_columns")

    def _require_resolved(self, what: str) -> None:
        if not self.is_resolved:
            raise ConfigError(f"LossConfig.{what} is a property of the resolved config; call "
                              f"resolved() first (preset {self.preset!r})")

    @property
    def needs_teacher(self) -> bool:
        """The one decision whether a run needs a teacher store: soft targets (α > 0) or the
        teacher's top labels as candidates (T ⊂ A). Resolved configs only."""
        self._require_resolved("needs_teacher")
        return self.alpha > 0 or bool(self.teacher_negatives)

    @property
    def needs_miner(self) -> bool:
        """Hard negatives H ⊂ A from the FAISS miner: ``mined`` on the candidate path (the exact
        softmax over all labels has no use for them). Resolved configs only."""
        self._require_resolved("needs_miner")
        return bool(self.mined) and not self.all_labels

    @property
    def needs_sampler(self) -> bool:
        """Random negatives R drawn each step: ``num_random > 0`` on the candidate path.
        Resolved configs only."""
        self._require_resolved("needs_sampler")
        return not self.all_labels and self.num_random > 0


_DEFAULTS = dict(
    preset="softmax", all_labels=False, alpha=0.0, tau_t=1.0, tau_s=1.0, teacher_k=20,
    teacher_negatives=False, mined=False, num_random=0, proposal="unigram", proposal_beta=0.5,
    unique_sampling=True, correct_positives=False, share_columns=True, reduction="decoupled",
    teacher_term="decoupled", glas=0.0,
)

PRESETS = {
    "softmax": dict(all_labels=True),
    "sampled": dict(num_random=2048),
    "mined": dict(mined=True, num_random=512),
    "distill": dict(all_labels=True, alpha=0.5),
    "teacher-negatives": dict(teacher_negatives=True, num_random=512),
    "double-distill": dict(alpha=0.5, teacher_negatives=True, mined=True, num_random=512),
}
