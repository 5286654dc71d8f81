
import pytest

from xmr.objectives.config import PRESETS, LossConfig
from xmr.train.config import TrainConfig


def test_presets_are_configurations_of_one_family():
    expected = {
        "softmax": dict(all_labels=True, alpha=0.0, teacher_negatives=False, mined=False, num_random=0),
        "sampled": dict(all_labels=False, alpha=0.0, teacher_negatives=False, mined=False),
        "mined": dict(all_labels=False, alpha=0.0, mined=True),
        "distill": dict(all_labels=True, alpha=0.5),
        "teacher-negatives": dict(all_labels=False, alpha=0.0, teacher_negatives=True),
        "double-distill": dict(all_labels=False, alpha=0.5, teacher_negatives=True, mined=True),
    }
    assert set(PRESETS) == set(expected)
    for name, want in expected.items():
        r = LossConfig(preset=name).resolved()
        for k, v in want.items():
            assert getattr(r, k) == v, (name, k)
    assert LossConfig(preset="sampled").resolved().num_random > 0


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown loss preset 'dist'; valid presets: softmax, sampled, mined, "
                                         "distill, teacher-negatives, double-distill"):
        LossConfig(preset="dist").resolved()


def test_explicit_fields_override_the_preset():
    r = LossConfig(preset="double-distill", alpha=0.9, num_random=7).resolved()
    assert r.alpha == 0.9 and r.num_random == 7 and r.mined


def test_invalid_values():
    with pytest.raises(ValueError, match=r"loss.alpha must be in \[0, 1\], got 1.5"):
        LossConfig(alpha=1.5).resolved()
    with pytest.raises(ValueError, match="temperatures must be > 0, got tau_t=0.0, tau_s=1.0"):
        LossConfig(tau_t=0.0).resolved()


def test_train_config_json_round_trip_and_overrides(tmp_path):
    cfg = TrainConfig().with_overrides(["loss.alpha=0.7", "model.hidden=[512, 256]", "optim.epochs=3",
                                        "teacher=runs/t", "loss.preset=mined"])
    p = tmp_path / "c.json"
    p.write_text(cfg.to_json())
    back = TrainConfig.from_json(p)
    assert back == cfg
    assert back.model.hidden == [512, 256] and back.loss.alpha == 0.7 and back.teacher == "runs/t"


def test_override_errors_name_the_key():
    with pytest.raises(ValueError, match=r"unknown config key 'loss.alpah'; valid keys here: \['all_labels'"):
        TrainConfig().with_overrides(["loss.alpah=1"])
    with pytest.raises(ValueError, match="config key 'optim.epochs': expected an integer, got 'many'"):
        TrainConfig().with_overrides(["optim.epochs=many"])
    with pytest.raises(ValueError, match="--set expects key=value, got 'loss.alpha'"):
        TrainConfig().with_overrides(["loss.alpha"])
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['bogus'\]"):
        TrainConfig.from_dict({"bogus": 1})
