import json

from xmr.cli.main import main


def test_bad_config_is_one_line_error(tmp_path, capsys):
    rc = main(["train", "--set", "loss.preset=bogus", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.strip() == ("xmr train: error: unknown loss preset 'bogus'; valid presets: softmax, "
                           "sampled, mined, distill, teacher-negatives, double-distill")
    assert not (tmp_path / "x").exists()


def test_print_config_round_trips(capsys):
    assert main(["train", "--set", "loss.alpha=0.25", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["loss"]["alpha"] == 0.25 and cfg["loss"]["preset"] == "double-distill"
