"""The registry of public benchmarks: complete entries, stated constants, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from xmr.cli.main import main
from xmr.data.registry import (KINDS, DatasetInfo, dataset_names, get_dataset,
                               list_datasets)

EXPECTED = ["EURLex-4K", "Wiki10-31K", "AmazonCat-13K", "Amazon-670K", "Wiki-500K",
            "Amazon-3M", "LF-AmazonTitles-131K", "LF-AmazonTitles-1.3M", "debian-deps"]


def test_all_benchmarks_are_registered():
    assert list(dataset_names()) == EXPECTED


@pytest.mark.parametrize("info", list_datasets(), ids=lambda d: d.name)
def test_every_entry_is_complete(info: DatasetInfo):
    assert info.kind in KINDS
    assert 0 < info.prop_a < 1 and 0 < info.prop_b < 5
    assert info.sources, "every entry names where its data comes from"
    for src in info.sources:
        assert src.url.startswith(("http://", "https://"))
        assert src.filename and "/" not in src.filename
        assert src.sha256 is None or (len(src.sha256) == 64 and int(src.sha256, 16) >= 0)
    s = info.stats
    assert s.n_train > 0 and s.n_test > 0 and s.num_labels > 0 and s.labels_per_point > 0
    if info.kind != "embedded":
        assert s.num_features > 0 and s.points_per_label > 0
        # The published averages are over the training set, points/label over the labels that
        # occur in it: N * labels/point / points/label = labels that occur <= L.
        occurring = s.n_train * s.labels_per_point / s.points_per_label
        assert 0.5 * s.num_labels < occurring <= 1.01 * s.num_labels
        assert "drive" in info.notes.lower()  # says how the Drive hosting behaves
    if info.kind == "bow":
        assert set(info.files) == {"train", "test"}
    if info.kind == "lf":
        assert set(info.files) == {"trn", "tst", "lbl", "filter_train", "filter_test"}
        assert info.files["trn"].endswith("trn.json.gz")
    json.dumps(info.to_dict())  # plain data, serialisable


def test_propensity_constants_are_stated_per_dataset():
    amazon = ["Amazon-670K", "Amazon-3M", "LF-AmazonTitles-131K", "LF-AmazonTitles-1.3M"]
    for name in amazon:
        d = get_dataset(name)
        assert (d.prop_a, d.prop_b) == (0.6, 2.6), name
    d = get_dataset("Wiki-500K")
    assert (d.prop_a, d.prop_b) == (0.5, 0.4)
    # Names that a substring rule would get wrong keep the defaults, as stated in their entries.
    for name in ["AmazonCat-13K", "Wiki10-31K", "EURLex-4K", "debian-deps"]:
        d = get_dataset(name)
        assert (d.prop_a, d.prop_b) == (0.55, 1.5), name


def test_published_statistics_of_two_anchors():
    s = get_dataset("Amazon-670K").stats
    assert (s.n_train, s.n_test, s.num_features, s.num_labels) == (490449, 153025, 135909, 670091)
    s = get_dataset("EURLex-4K").stats
    assert (s.n_train, s.n_test, s.num_features, s.num_labels) == (15539, 3809, 5000, 3993)


def test_lookup_is_case_insensitive():
    assert get_dataset("amazon-670k") is get_dataset("AMAZON-670K") is get_dataset("Amazon-670K")
    assert get_dataset("  lf-amazontitles-1.3m ").name == "LF-AmazonTitles-1.3M"


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as ei:
        get_dataset("Amazon-670")
    assert str(ei.value) == ("unknown dataset 'Amazon-670'; expected one of: "
                             + ", ".join(EXPECTED))


def test_cli_list_and_info(tmp_path, capsys):
    assert main(["data", "list", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "kind", "N_trn", "N_tst", "D", "L", "A", "B", "prepared"]
    rows = {line.split()[0]: line.split() for line in out[2:]}
    assert list(rows) == EXPECTED
    assert rows["Amazon-670K"][1:] == ["bow", "490,449", "153,025", "135,909", "670,091",
                                       "0.6", "2.6", "no"]
    assert rows["Wiki-500K"][6:8] == ["0.5", "0.4"]

    assert main(["data", "info", "lf-amazontitles-131k", "--root", str(tmp_path)]) == 0
    info = capsys.readouterr().out
    assert info.startswith("LF-AmazonTitles-131K  (kind: lf)")
    assert "propensity A, B : 0.6, 2.6" in info
    assert "trn.json.gz" in info and "filter_labels_test.txt" in info

    assert main(["data", "info", "EURLex-4K", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "EURLex-4K"

    assert main(["data", "info", "nope"]) == 1
    assert capsys.readouterr().err == ("xmr data: error: unknown dataset 'nope'; expected one "
                                       "of: " + ", ".join(EXPECTED) + "\n")


def test_import_has_no_side_effects():
    """Importing the registry, download and prepare modules imports no faiss/torch/numba."""
    code = ("import sys, xmr.data.registry, xmr.data.download, xmr.data.prepare, "
            "xmr.cli.cmd_data; bad = [m for m in ('faiss', 'torch', 'numba', 'sklearn') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
