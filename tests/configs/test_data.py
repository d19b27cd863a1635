"""The data section's decode placement options (data.decode_resource / decode_placement)."""

import pytest

from gair.configs import ConfigError, format_help, load_config
from gair.configs.data import DataConfig


def test_decode_placement_defaults_and_overrides():
    cfg = load_config(DataConfig, None, [])
    assert (cfg.decode_resource, cfg.decode_placement, cfg.decode_resource_per_task) == ("preprocess", "auto", 0.001)
    cfg = load_config(DataConfig, None, ["decode_placement=require", "decode_resource=cpu_pool"])
    assert (cfg.decode_resource, cfg.decode_placement) == ("cpu_pool", "require")
    # Off: no resource name is needed.
    assert load_config(DataConfig, None, ["decode_placement=anywhere", "decode_resource="]).decode_resource == ""


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["decode_placement=gpu_nodes"], "not one of"),
        (["decode_resource="], "needs a decode_resource name"),
        (["decode_resource=CPU"], "must be a custom resource"),
        (["decode_resource_per_task=0"], "decode_resource_per_task must be > 0"),
    ],
)
def test_bad_decode_placement_is_an_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(DataConfig, None, overrides)


def test_decode_placement_options_are_documented():
    text = format_help(DataConfig)
    for key in ("decode_resource", "decode_placement", "decode_resource_per_task"):
        assert f"  {key} = " in text
    assert "auto" in text and "require" in text and "anywhere" in text
