"""Miniature copies of the public benchmarks, in the exact formats their archives ship.

Each miniature is written where ``xmr data prepare`` looks for hand-placed files —
``ROOT/NAME/raw/<the registry's relative path>`` — so that ``prepare`` runs offline through the
same reader and converter as the real data:

* BoW sets: XC repository text, header ``N D L`` then ``l1,l2 f:v f:v`` per line (written here
  independently of xmr's own writer);
* LF sets: ``trn.json.gz`` / ``tst.json.gz`` / ``lbl.json.gz`` (one JSON object per line with
  ``uid``, ``title``, ``content``, ``target_ind``, ``target_rel``) and
  ``filter_labels_{train,test}.txt`` ("row label" pairs).

The data are planted so that training has something to learn: every label owns a few signature
features (BoW) or words (LF titles); a point carries the signatures of its labels plus noise.
Label popularity is Zipf-like, as in the real sets.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from xmr.data.registry import KIND_BOW, KIND_LF, get_dataset

NUM_LABELS = 96
NUM_FEATURES = 160
N_TRAIN = 320
N_TEST = 80
SIGNATURE = 3  # features (or words) owned by each label


def _planted_labels(n: int, rng: np.random.Generator, max_labels: int):
    """``n`` label lists, Zipf-like popularity, 1..max_labels labels each."""
    p = 1.0 / np.arange(1, NUM_LABELS + 1) ** 0.8
    p /= p.sum()
    out = []
    for _ in range(n):
        m = int(rng.integers(1, max_labels + 1))
        out.append(sorted(set(rng.choice(NUM_LABELS, size=m, p=p).tolist())))
    return out


def _signatures(rng: np.random.Generator) -> np.ndarray:
    return np.stack([rng.choice(NUM_FEATURES, size=SIGNATURE, replace=False)
                     for _ in range(NUM_LABELS)])


def _bow_lines(labels, sig, rng) -> str:
    lines = [f"{len(labels)} {NUM_FEATURES} {NUM_LABELS}"]
    for ls in labels:
        feats = {}
        for j in ls:
            for f in sig[j]:
                feats[int(f)] = feats.get(int(f), 0.0) + 1.0
        for f in rng.choice(NUM_FEATURES, size=2, replace=False):
            feats[int(f)] = feats.get(int(f), 0.0) + 0.3
        norm = float(np.sqrt(sum(v * v for v in feats.values())))
        fv = " ".join(f"{f}:{v / norm:.4f}" for f, v in sorted(feats.items()))
        lines.append(f"{','.join(map(str, ls))} {fv}".strip())
    return "\n".join(lines) + "\n"


def _write_json_gz(path: Path, records) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def _lf_records(labels, rng, offset: int):
    recs = []
    for i, ls in enumerate(labels):
        words = [f"w{j}x{s}" for j in ls for s in range(SIGNATURE)]
        words += [f"noise{int(r)}" for r in rng.integers(0, 50, size=2)]
        rng.shuffle(words)
        recs.append({"uid": f"P{offset + i:05d}", "title": " ".join(words), "content": "",
                     "target_ind": [int(j) for j in ls],
                     "target_rel": [1.0] * len(ls)})
    return recs


def write_miniature(name: str, root: Path, seed: int = 0) -> Path:
    """Write a miniature of registry dataset ``name`` into ``root/NAME/raw``; return that folder."""
    info = get_dataset(name)
    raw = Path(root) / info.name / "raw"
    rng = np.random.default_rng(seed)
    max_labels = max(1, min(6, int(round(info.stats.labels_per_point))))
    trn, tst = _planted_labels(N_TRAIN, rng, max_labels), _planted_labels(N_TEST, rng, max_labels)
    if info.kind == KIND_BOW:
        sig = _signatures(rng)
        for role, labels in (("train", trn), ("test", tst)):
            p = raw / info.files[role]
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(_bow_lines(labels, sig, rng))
    elif info.kind == KIND_LF:
        paths = {role: raw / rel for role, rel in info.files.items()}
        for p in paths.values():
            p.parent.mkdir(parents=True, exist_ok=True)
        _write_json_gz(paths["trn"], _lf_records(trn, rng, 0))
        _write_json_gz(paths["tst"], _lf_records(tst, rng, N_TRAIN))
        _write_json_gz(paths["lbl"], [{"uid": f"L{j:05d}", "title": f"label {j}", "content": ""}
                                      for j in range(NUM_LABELS)])
        for role, n in (("filter_train", N_TRAIN), ("filter_test", N_TEST)):
            rows = rng.choice(n, size=n // 8, replace=False)
            pairs = sorted((int(r), int(rng.integers(NUM_LABELS))) for r in rows)
            paths[role].write_text("".join(f"{r} {l}\n" for r, l in pairs))
    else:
        raise ValueError(f"{name}: no miniature for kind {info.kind!r}")
    return raw
