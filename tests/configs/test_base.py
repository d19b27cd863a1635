from dataclasses import dataclass
from typing import Any

import pytest

from gair.configs import ConfigError, field, flatten, format_help, from_dict, load_config, to_dict
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


@dataclass
class Kinds:
    count: int = field(1, help="an int")
    ratio: float | None = field(None, help="an optional float")
    names: list[str] = field(default_factory=list, help="a list")
    sizes: tuple[int, ...] = field((1,), help="a variable tuple")
    extra: dict[str, Any] = field(default_factory=dict, help="free-form")


@pytest.mark.parametrize(
    "override,attr,expected",
    [
        ("count=1e3", "count", 1000),  # YAML reads 1e3 as a string
        ("count=2.0", "count", 2),
        ("ratio=null", "ratio", None),
        ("ratio=3", "ratio", 3.0),
        ("ratio='0.5'", "ratio", 0.5),
        ("names=a,b", "names", ["a", "b"]),
        ("names=[x, 1]", "names", ["x", "1"]),
        ("sizes=[2, 3.0]", "sizes", (2, 3)),
        ("extra={a: 1}", "extra", {"a": 1}),
    ],
)
def test_each_type_converts_cli_values(override, attr, expected):
    value = getattr(load_config(Kinds, None, [override]), attr)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    "override,match",
    [
        ("count=2.5", "expected an integer"),
        ("count=true", "expected an integer"),
        ("ratio=abc", "expected a number"),
        ("names=5", "expected a list"),
        ("sizes=[1, x]", r"sizes\[1\]: expected an integer"),
        ("extra=3", "expected a mapping"),
    ],
)
def test_each_type_rejects_wrong_values(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(Kinds, None, [override])


def test_an_unsupported_field_type_is_a_programming_error():
    @dataclass
    class Odd:
        when: complex = field(0j, help="no converter for complex")

    with pytest.raises(TypeError, match="not supported"):
        from_dict(Odd, {"when": 1})
