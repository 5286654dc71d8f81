"""The README's "Your own data" section, run as written on a small generated TSV dataset.

Both the shell commands and the Python example are extracted from README.md, so the README and
this test cannot drift apart.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from _helpers import TOPICS, tsv_folder

from xmr.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def _section_blocks(lang: str):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    sec = text.split("## Your own data", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", sec, flags=re.S)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XMR_DATA", str(tmp_path / "xmr_data"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    tsv_folder(tmp_path / "data" / "mydata", n=300)
    (tmp_path / "queries.txt").write_text("w00 w01 w02\nw36 w37 w38\n")
    return tmp_path


def _json_tail(out: str):
    """The JSON object a command prints last (progress lines may come before it)."""
    return json.loads(out[out.index("{\n") if out.startswith("{\n") else out.index("\n{\n") + 1:])


def test_readme_commands_run_end_to_end(workdir, capsys):
    (block,) = _section_blocks("bash")
    commands = [shlex.split(ln, comments=True) for ln in block.splitlines() if ln.strip()]
    assert [c[:2] for c in commands] == [
        ["xmr", "data"], ["xmr", "data"], ["xmr", "train"], ["xmr", "teacher"], ["xmr", "train"],
        ["xmr", "evaluate"], ["xmr", "index"], ["xmr", "predict"], ["xmr", "predict"]]
    outs = []
    for argv in commands:
        assert argv[0] == "xmr"
        rc = main(argv[1:])
        out, err = capsys.readouterr()
        assert rc == 0, f"{' '.join(argv)} failed: {err}"
        outs.append(out)
    assert "N (train / test)     : 240 / 60" in outs[1]
    store = json.loads((workdir / "runs/teacher_store/meta.json").read_text())
    assert (store["folds"], store["out_of_fold"], store["num_rows"], store["k"]) == (5, True, 240, 32)
    student = _json_tail(outs[4])
    assert student["test"]["P@1"] > 0.5  # planted: each label owns four words
    assert _json_tail(outs[5])["P@1"] == pytest.approx(student["test"]["P@1"])
    assert (workdir / "runs/student_index").is_dir()
    assert main(["index", "search", "--index", "runs/student_index", "--model",
                 "runs/student/model", "-k", "3", "--out", "top3.npz"]) == 0  # its own test split
    capsys.readouterr()
    with np.load(workdir / "top3.npz") as z:
        assert z["ids"].shape == (60, 3)
    pred = [json.loads(ln) for ln in outs[7].splitlines()]
    assert pred[0]["text"] == "some words about the topic" and len(pred[0]["labels"]) == 5
    assert set(pred[0]["labels"]) <= set(TOPICS)
    by_file = [json.loads(ln) for ln in outs[8].splitlines()]
    assert by_file[0]["labels"][0] == "topic-a" and by_file[1]["labels"][0] == "topic-j"
    with np.load(workdir / "preds.npz") as z:
        assert z["ids"].shape == (2, 5) and z["scores"].dtype == np.float32


def test_readme_python_example_runs(workdir, capsys):
    (block,) = _section_blocks("python")
    assert len([ln for ln in block.splitlines() if ln.strip()]) <= 11
    scope: dict = {}
    exec(compile(block, "README.md (Your own data)", "exec"), scope)
    out = capsys.readouterr().out.splitlines()
    p1, psp1 = map(float, out[0].split())
    assert p1 > 0.5 and 0 < psp1 <= 1
    assert scope["ids"].shape == (60, 5) and scope["ids"].dtype == np.int64
    assert out[1].startswith("[[('topic-")
    assert scope["teacher"].store.meta["folds"] == 5


def test_predict_text_needs_a_text_model(workdir, capsys, tmp_path):
    from xmr.data.formats import write_xc_bow
    from _helpers import planted_matrices

    m = planted_matrices()
    (tmp_path / "xc").mkdir()
    write_xc_bow(tmp_path / "xc/train.txt", m["X_trn"], m["Y_trn"])
    write_xc_bow(tmp_path / "xc/test.txt", m["X_tst"], m["Y_tst"])
    assert main(["train", "--set", "data.dataset=xc", "--set", "loss.preset=softmax", "--set",
                 "model.dim=8", "--set", "optim.epochs=1", "--out", "runs/xc"]) == 0
    capsys.readouterr()
    assert main(["predict", "--model", "runs/xc/model", "--text", "hello"]) == 1
    assert capsys.readouterr().err.strip() == (
        "xmr predict: error: runs/xc/model/vectorizer/vectorizer.json: expected the TF-IDF "
        "vectorizer of a model trained on a text dataset (tsv or lf), got no such file; "
        "predict with --dataset instead")
    # the split route still works, the model's own dataset being the default
    assert main(["predict", "--model", "runs/xc/model", "-k", "3", "--out", "p.npz"]) == 0
    with np.load("p.npz") as z:
        assert z["ids"].shape == (30, 3)


@pytest.mark.parametrize("layout", ["xc", "npz", "tsv"])
def test_train_and_evaluate_on_a_folder(workdir, capsys, layout):
    from xmr.data.formats import write_npz, write_xc_bow
    from _helpers import planted_matrices

    d = workdir / "data" / layout
    if layout == "tsv":
        d = workdir / "data" / "mydata"
    else:
        m = planted_matrices()
        d.mkdir(parents=True)
        if layout == "xc":
            write_xc_bow(d / "train.txt", m["X_trn"], m["Y_trn"])
            write_xc_bow(d / "test.txt", m["X_tst"], m["Y_tst"])
        else:
            for k, v in m.items():
                write_npz(d / f"{k}.npz", v)
    assert main(["train", "--set", f"data.dataset={d}", "--set", "loss.preset=softmax", "--set",
                 "model.dim=8", "--set", "optim.epochs=1", "--out", "runs/x"]) == 0
    summary = _json_tail(capsys.readouterr().out)
    assert summary["dataset"] == d.name and 0 <= summary["test"]["P@1"] <= 1
    assert main(["evaluate", "--model", "runs/x/model", "--dataset", str(d)]) == 0
    assert _json_tail(capsys.readouterr().out)["P@1"] == pytest.approx(summary["test"]["P@1"])
    assert main(["data", "info", str(d)]) == 0
    assert "L (labels)" in capsys.readouterr().out
