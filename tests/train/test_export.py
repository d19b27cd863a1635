"""gair.train.export: a DeepSpeed stage-0 checkpoint (its real file layout, written here) -> a hub export."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from gair.configs.model import LossConfig
from gair.hub import load_pretrained
from gair.models.pretrain import GAIRPretrainModule
from gair.train import checkpoint, export
from tests.models._factory import tiny_cfg


def _stage0_checkpoint(directory, module: torch.nn.Module, step: int = 3):
    """What DeepSpeed writes for ZeRO stage 0: ``<tag>/mp_rank_00_model_states.pt`` holding ``module``."""
    state = checkpoint.TrainState(step=step)
    (directory / state.tag).mkdir(parents=True)
    torch.save({"module": module.state_dict()}, directory / state.tag / "mp_rank_00_model_states.pt")
    (directory / checkpoint.STATE_FILE).write_text(json.dumps(dataclasses.asdict(state)))
    return directory


def test_export_keeps_the_gair_weights_and_drops_the_objective_state(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_cfg()
    module = GAIRPretrainModule(cfg, LossConfig(queue_size=8))
    ckpt = _stage0_checkpoint(tmp_path / "ckpt", module)
    out = export.export_checkpoint(ckpt, cfg, tmp_path / "export", extra={"run_name": "r"})
    loaded = load_pretrained(out)
    expected = module.model.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value.float(), msg=key)
    assert json.loads((out / "config.json").read_text())["run_name"] == "r"


def test_missing_model_states_is_a_clear_error(tmp_path):
    state = checkpoint.TrainState(step=1)
    (tmp_path / state.tag).mkdir()
    (tmp_path / checkpoint.STATE_FILE).write_text(json.dumps(dataclasses.asdict(state)))
    with pytest.raises(FileNotFoundError, match="no DeepSpeed model states"):
        export.consolidated_state_dict(tmp_path)
    with pytest.raises(KeyError, match="no 'model.' entries"):
        export.gair_state_dict({"queue": torch.zeros(1)})
