
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


def test_resolution_happens_once_per_config_and_its_result_is_read_only():
    import dataclasses

    c = LossConfig(preset="mined")
    r = c.resolved()
    assert r.is_resolved and not c.is_resolved
    assert c.resolved() is r and r.resolved() is r  # remembered; a resolved one is returned
    assert dataclasses.asdict(c)["alpha"] is None  # the unresolved config is untouched
    assert r == LossConfig(**dataclasses.asdict(r))  # the marker is no field
    with pytest.raises(AttributeError, match="a resolved LossConfig is read-only"):
        r.num_random = 3
    c.num_random = 3  # the unresolved config changes: resolved anew
    r3 = c.resolved()
    assert r3 is not r and r3.num_random == 3 and r.num_random == 512
    assert not dataclasses.replace(r, alpha=0.1).is_resolved


def test_what_a_run_needs_is_a_property_of_the_resolved_config():
    from xmr.errors import ConfigError

    with pytest.raises(ConfigError, match="needs_teacher is a property of the resolved config"):
        LossConfig(preset="distill").needs_teacher
    want = {  # preset: (needs_teacher, needs_miner, needs_sampler)
        "softmax": (False, False, False), "sampled": (False, False, True),
        "mined": (False, True, True), "distill": (True, False, False),
        "teacher-negatives": (True, False, True), "double-distill": (True, True, True),
    }
    for preset, (t, m, s) in want.items():
        r = LossConfig(preset=preset).resolved()
        assert (r.needs_teacher, r.needs_miner, r.needs_sampler) == (t, m, s), preset
    # the exact softmax has no use for a miner or random draws even when they are set
    r = LossConfig(preset="softmax", mined=True, num_random=5).resolved()
    assert not r.needs_miner and not r.needs_sampler


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
    with pytest.raises(ValueError, match="^--set: expected key=value, got 'loss.alpha'$"):
        TrainConfig().with_overrides(["loss.alpha"])
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['bogus'\]"):
        TrainConfig.from_dict({"bogus": 1})
