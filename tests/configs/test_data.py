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


def test_train_manifests_from_yaml_and_from_the_command_line(tmp_path):
    from gair.configs import from_dict, to_dict
    from gair.configs.data import ManifestSource, source_labels

    path = tmp_path / "data.yaml"
    path.write_text(
        "train_manifests:\n  - {uri: s3://a/naip/manifest, weight: 0.7}\n  - {uri: /d/sv, weight: 0.3, name: streets}\n"
    )
    cfg = load_config(DataConfig, path)
    assert cfg.mixed and cfg.train_manifest == ""
    assert cfg.train_manifests == [
        ManifestSource("s3://a/naip/manifest", 0.7, ""),
        ManifestSource("/d/sv", 0.3, "streets"),
    ]
    assert source_labels(cfg.train_manifests) == ["naip", "streets"]
    assert from_dict(DataConfig, to_dict(cfg)) == cfg  # how the workers get it
    cli = load_config(DataConfig, None, ["train_manifests=s3://a/naip/manifest:0.7,streets=/d/sv:0.3"])
    assert cli == cfg
    flow = load_config(DataConfig, None, ["train_manifests=[{uri: s3://a/m.parquet}, {uri: s3://b/m.parquet}]"])
    assert [s.weight for s in flow.train_manifests] == [1.0, 1.0]
    assert source_labels(flow.train_manifests) == ["a", "b"]
    assert source_labels([ManifestSource("/x/m"), ManifestSource("/y/m")]) == ["m_0", "m_1"]
    assert not load_config(DataConfig, None, ["train_manifest=s3://a/m"]).mixed  # one manifest: unchanged


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["train_manifests=s3://a/m:0"], "weight must be > 0"),
        (["train_manifests=s3://a/m:-1"], "weight must be > 0"),
        (["train_manifests=s3://a/m:heavy"], "weight 'heavy' is not a number"),
        (["train_manifests=[{uri: s3://a/m, wieght: 2}]"], "Did you mean weight"),
        (["train_manifests=[{weight: 2}]"], "empty uri"),
        (["train_manifests=s3://a/m:1", "train_manifest=s3://b/m"], "not both"),
        (["train_manifests=[{uri: s3://a/m, name: 'a b'}]"], "may hold only"),
    ],
)
def test_bad_train_manifests_are_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(DataConfig, None, overrides)


def test_train_manifests_scheme_is_documented():
    text = format_help(DataConfig)
    assert "  train_manifests = []" in text and "round(weight_i / sum of weights x T)" in text
