from dataclasses import dataclass

import pytest

from gair.configs._base import ConfigError, field, flatten, format_help, load_config, to_dict
from gair.configs.model import LossConfig, ModelConfig


@dataclass
class Inner:
    lr: float = field(1e-3, help="learning rate")
    betas: tuple[float, float] = field((0.9, 0.95), help="Adam betas")


@dataclass
class Outer:
    name: str = field("run", help="name")
    steps: int = field(10, help="steps")
    flag: bool = field(False, help="a flag")
    optim: Inner = field(default_factory=Inner, help="optimizer")

    def validate(self):
        if self.steps <= 0:
            raise ValueError("steps must be > 0")


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\noptim:\n  lr: 0.1\n")
    cfg = load_config(Outer, path, ["optim.lr=3e-4", "flag=true", "optim.betas=[0.8, 0.9]"])
    assert cfg.steps == 5 and cfg.optim.lr == pytest.approx(3e-4) and cfg.flag is True
    assert cfg.optim.betas == (0.8, 0.9)
    assert flatten(to_dict(cfg))["optim.lr"] == pytest.approx(3e-4)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["optim.lrr=1"], "unknown config key optim.'lrr'.*Did you mean lr"),
        (["stepz=1"], "Did you mean steps"),
        (["steps=abc"], "expected an integer"),
        (["steps=0"], "steps must be > 0"),
        (["name.x=1"], "not a section"),
        (["flag=maybe"], "true/false"),
        (["optim.betas=[1]"], "expected 2 items"),
        (["noequals"], "key.sub=value"),
    ],
)
def test_bad_input_is_an_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(Outer, None, overrides)


def test_unknown_key_in_yaml_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  weight_decai: 0.1\n")
    with pytest.raises(ConfigError, match="weight_decai"):
        load_config(Outer, path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "missing.yaml")


def test_help_lists_every_key_with_its_doc():
    text = format_help(Outer)
    for key in ("name", "steps", "flag", "optim.lr", "optim.betas"):
        assert f"  {key} = " in text
    assert "learning rate" in text


def test_model_and_loss_configs_validate():
    with pytest.raises(ConfigError, match="multiple"):
        load_config(ModelConfig, None, ["rs_image_size=100"])
    with pytest.raises(ConfigError, match="not one of"):
        load_config(ModelConfig, None, ["query_mode=nearest"])
    with pytest.raises(ConfigError, match="temperature"):
        load_config(LossConfig, None, ["temperature=0"])
    assert load_config(ModelConfig, None, ["size=tiny"]).width == 64
