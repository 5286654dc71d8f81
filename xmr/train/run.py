"""One function is "a run": load the data and the teacher, train, save, evaluate on the test split.

:func:`run_training` is what ``xmr train`` does; the CLI, the Python API (:func:`xmr.train`) and
the recipes call it instead of re-assembling the pieces. In a distributed run (``torchrun``) the
process group is created from the environment and always torn down in a ``finally``.

A model trained on a text dataset (``tsv``/``lf``) carries what is needed to score new raw text:
``OUT/model/vectorizer/`` (the fitted TF-IDF as JSON + ``.npy``, see
:class:`xmr.data.text.TextVectorizer`) and ``OUT/model/labels.txt`` (one label name per line,
written for any dataset that has names).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from xmr.utils.atomic import atomic_open

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What :func:`run_training` returns.

    ``summary`` is the JSON-able dict ``xmr train`` prints (model path, timings, ``test``
    metrics); ``model`` the fitted :class:`xmr.models.XMRModel`; ``dataset`` the
    :class:`xmr.data.dataset.XMCDataset` it was trained on; ``model_dir`` ``OUT/model`` (None
    without ``out``).
    """

    summary: dict
    model: object
    dataset: object
    model_dir: Optional[Path] = None
    history: list = field(default_factory=list)

    def predict(self, X, k: int = 5):
        return self.model.predict(X, k)


def attach_dataset_files(model_dir: Path, dataset) -> None:
    """Copy the dataset's label names and text vectorizer into the model folder, so that the
    folder alone predicts labels by name for new raw text."""
    model_dir = Path(model_dir)
    names = getattr(dataset, "label_names", None)
    if names is not None:
        with atomic_open(model_dir / "labels.txt", "w", encoding="utf-8") as f:
            for n in names:
                f.write(str(n).replace("\n", " ") + "\n")
    vec = (dataset.info or {}).get("vectorizer_dir")
    if vec:
        dest = model_dir / "vectorizer"
        tmp = model_dir / ".vectorizer.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(vec, tmp)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)


def run_training(cfg, out=None, resume: bool = False, *, dataset=None, progress: bool = True,
                 test_eval: bool = True, ks=(1, 3, 5)) -> RunResult:
    """Train ``cfg`` (a :class:`xmr.train.config.TrainConfig`) into ``out`` and evaluate.

    ``dataset`` (an already loaded :class:`XMCDataset`) skips loading ``cfg.data``. ``out`` is
    the run folder (``model/``, ``checkpoint/``); ``None`` keeps everything in memory (no
    resume). ``test_eval`` evaluates on the test split with :func:`xmr.eval.evaluate_model`
    (collective in a distributed run: every rank predicts). ``cfg.threads`` (torch's intra-op
    threads) applies to this call only: the previous count is restored when it returns.
    """
    cfg.loss.resolved()  # fail early on a bad loss config (before any data is loaded); the
    # Trainer gets this same resolved object (resolved() computes once per config)
    from xmr.data.loaders import load_from_config
    from xmr.distributed import init_from_env, rank_of
    from xmr.eval.model_eval import evaluate_model
    from xmr.eval.propensity import inverse_propensity
    from xmr.train.loop import Trainer
    from xmr.utils.threads import torch_threads

    if resume and out is None:
        raise ValueError("resume needs the run folder `out`")
    group = init_from_env(cfg.device)
    try:
        with torch_threads(cfg.threads):  # the caller's thread count is restored after the run
            ds = dataset if dataset is not None else load_from_config(cfg.data)
            teacher = None
            if cfg.teacher:
                from xmr.teachers.store import TeacherStore

                teacher = TeacherStore.load(cfg.teacher)
            inv_prop = inverse_propensity(ds.Y_trn, A=ds.prop_a, B=ds.prop_b)
            tr = Trainer(cfg, ds.X_trn, ds.Y_trn, out_dir=out, teacher=teacher, inv_prop=inv_prop,
                         progress=progress, process_group=group)
            res = tr.fit(resume=resume)
            if res.model_dir is not None and rank_of(group) == 0:
                attach_dataset_files(res.model_dir, ds)
            summary = {"model": str(res.model_dir) if res.model_dir else None,
                       "dataset": ds.name, "train_seconds": res.train_seconds,
                       "samples_per_second": res.samples_per_second,
                       "mining_share": res.mining_share}
            if test_eval:
                summary["test"] = evaluate_model(res.model, ds, ks=ks, split="test",
                                                 inv_prop=inv_prop)
            return RunResult(summary=summary, model=res.model, dataset=ds,
                             model_dir=res.model_dir, history=res.history)
    finally:
        if group is not None:
            import torch.distributed as dist

            dist.destroy_process_group()
