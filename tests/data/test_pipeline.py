"""The Ray Data pipeline on a real local Ray cluster, reading manifests from a real S3 server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gair.data import decode, manifest, pipeline, storage, synthetic
from gair.data.decode import Reason
from tests.data.conftest import (
    BAD_ROW_CORPUS,
    bad_row,
    good_row,
    tile_centre_lonlat,
    tiny_data_cfg,
    tiny_model_cfg,
    write_rows,
)

pytestmark = pytest.mark.usefixtures("ray_start_2_cpus")

CONTRACT = {  # key: (dtype, shape as a function of B, K, M, C, S, V)
    "rs": (torch.float32, lambda B, K, M, C, S, V: (B, C, S, S)),
    "sv": (torch.float32, lambda B, K, M, C, S, V: (B, K, 3, V, V)),
    "sv_mask": (torch.bool, lambda B, K, M, C, S, V: (B, K)),
    "lonlat": (torch.float32, lambda B, K, M, C, S, V: (B, K, 2)),
    "xy": (torch.float32, lambda B, K, M, C, S, V: (B, K, 2)),
    "xy_extra": (torch.float32, lambda B, K, M, C, S, V: (B, M, 2)),
    "lonlat_extra": (torch.float32, lambda B, K, M, C, S, V: (B, M, 2)),
}


@pytest.fixture(scope="module")
def s3_synthetic(s3_server: str) -> str:
    import boto3

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="gair-pipeline")
    return synthetic.write_synthetic(
        "s3://gair-pipeline/syn", tiles=12, obs_per_tile=4, seed=11, tile_size=40, sv_size=40, rows_per_shard=3
    )


def _collect(manifest_uri: str, train: bool, **cfg) -> tuple[list[dict], pipeline.BadRowStats]:
    data_cfg, model_cfg = tiny_data_cfg(**cfg), tiny_model_cfg()
    ds = pipeline.build_dataset(manifest_uri, data_cfg, model_cfg, train=train)
    it = pipeline.iter_training_batches(ds, data_cfg, model_cfg)
    return list(it), it.stats


def _check_contract(batch: dict[str, torch.Tensor], B: int, K: int, M: int) -> None:
    m = tiny_model_cfg()
    assert set(batch) == set(CONTRACT) | {"sv_index"}
    assert torch.equal(batch["sv_index"], batch["sv_mask"].reshape(-1).nonzero()[:, 0])
    for key, (dtype, shape) in CONTRACT.items():
        assert batch[key].dtype == dtype, key
        assert tuple(batch[key].shape) == shape(B, K, M, len(m.rs_bands), m.rs_image_size, m.sv_image_size), key
    assert (batch["xy"].abs() <= 1).all() and (batch["xy_extra"].abs() <= 1).all()
    assert (batch["lonlat"][..., 0].abs() <= 180).all() and (batch["lonlat"][..., 1].abs() <= 90).all()
    assert batch["rs"].min() >= 0 and batch["rs"].max() <= 1
    padded = ~batch["sv_mask"]
    assert batch["sv"][padded].abs().sum() == 0


def test_batches_follow_the_contract_from_s3(s3_synthetic: str) -> None:
    batches, stats = _collect(s3_synthetic, train=True, obs_per_tile=5)  # 4 real observations + 1 padded
    assert len(batches) == 3 and stats.seen == 12 and stats.bad == 0
    for b in batches:
        _check_contract(b, B=4, K=5, M=5)
        assert b["sv_mask"][:, :4].all() and not b["sv_mask"][:, 4].any()


def test_same_seed_same_batches_other_seed_differs(s3_synthetic: str) -> None:
    a, _ = _collect(s3_synthetic, train=True, seed=1)
    b, _ = _collect(s3_synthetic, train=True, seed=1)
    c, _ = _collect(s3_synthetic, train=True, seed=2)
    for x, y in zip(a, b, strict=True):
        for k in x:
            torch.testing.assert_close(x[k], y[k], rtol=0, atol=0)
    assert not all(torch.equal(x["xy_extra"], y["xy_extra"]) for x, y in zip(a, c, strict=True))


def test_skip_batches_resumes_the_same_stream(s3_synthetic: str) -> None:
    full, _ = _collect(s3_synthetic, train=False, shuffle_buffer=0)
    data_cfg, model_cfg = tiny_data_cfg(shuffle_buffer=0), tiny_model_cfg()
    ds = pipeline.build_dataset(s3_synthetic, data_cfg, model_cfg, train=False)
    resumed = list(pipeline.iter_training_batches(ds, data_cfg, model_cfg, skip_batches=1))
    assert len(resumed) == len(full) - 1
    torch.testing.assert_close(resumed[0]["rs"], full[1]["rs"])


def test_real_tiles_by_reference_on_s3(s3_server: str, real_tiles) -> None:
    """Real Sentinel-2 GeoTIFFs (UTM) on S3, referenced by URI, with generated street views."""
    import boto3

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="gair-real")
    rng = np.random.default_rng(0)
    rows = []
    for i, tile in enumerate(real_tiles[:8]):
        rs_uri = f"s3://gair-real/rs/{tile.name}"
        storage.write_bytes(rs_uri, tile.read_bytes())
        sv_uri = f"s3://gair-real/sv/{i}.jpg"
        storage.write_bytes(sv_uri, synthetic.decode.encode_jpeg(synthetic.render_sv(rng, i % 6, 48)))
        info, names, _ = manifest.read_tile_header(rs_uri)
        obs = manifest.observation(f"real-{i}", tuple(tile_centre_lonlat(tile)), sv_uri=sv_uri)
        rows.append(manifest.tile_row(f"real/{tile.stem}", info, names, [obs], rs_uri=rs_uri))
    uri = write_rows("s3://gair-real/manifest", rows)
    batches, stats = _collect(uri, train=False, shuffle_buffer=0, obs_per_tile=2)
    assert stats.bad == 0 and len(batches) == 2
    for b in batches:
        _check_contract(b, B=4, K=2, M=5)
        torch.testing.assert_close(b["xy"][:, 0], torch.zeros(4, 2), atol=0.01, rtol=0)  # the centre, unaugmented
        assert b["rs"].std() > 0.01  # real content, not zeros


def _bad_manifest(tmp_path) -> str:
    rows = [good_row(i, obs=3, tile_size=32) for i in range(16)] + [bad_row(k) for k, _, _ in BAD_ROW_CORPUS]
    order = np.random.default_rng(0).permutation(len(rows))
    return write_rows(str(tmp_path / "bad"), [rows[i] for i in order], rows_per_shard=8)


def test_bad_rows_are_skipped_and_counted(tmp_path) -> None:
    """Bad tiles are dropped and counted by reason; bad observations are skipped, their tiles kept."""
    uri = _bad_manifest(tmp_path)
    batches, stats = _collect(uri, train=True, max_bad_fraction=0.6)
    tile_kinds = [r for _, _, r in BAD_ROW_CORPUS if r not in decode.OBSERVATION_REASONS]
    obs_kinds = [r for _, _, r in BAD_ROW_CORPUS if r in decode.OBSERVATION_REASONS]
    assert stats.seen == 16 + len(BAD_ROW_CORPUS) and stats.bad == len(tile_kinds)
    assert len(batches) == (16 + len(obs_kinds)) // 4  # the good tiles and those with a bad observation
    assert stats.reasons == {r: tile_kinds.count(r) for r in tile_kinds}
    assert stats.obs_skipped == len(obs_kinds) and stats.obs_reasons == {r: obs_kinds.count(r) for r in obs_kinds}
    for b in batches:
        assert all(torch.isfinite(b[k]).all() for k in b if b[k].is_floating_point())
        assert (b["sv_mask"].sum(1) >= 2).all()


def test_a_non_finite_row_never_reaches_a_batch() -> None:
    """The consumer's guard: a row holding NaN/Inf that got past decode is dropped and counted."""
    import ray.data

    spec = pipeline.decode_spec(tiny_data_cfg(), tiny_model_cfg(), train=False)
    rows = decode.decode_rows([good_row(i, obs=3) for i in range(8)], spec)
    rows["rs"][2, 0, 0, 0] = np.nan
    rows["xy_extra"][5, 0, 0] = np.inf
    ds = ray.data.from_items([{k: v[i] for k, v in rows.items()} for i in range(8)])
    data_cfg = tiny_data_cfg(shuffle_buffer=0, batch_size=3, max_bad_fraction=0.5)
    it = pipeline.iter_training_batches(ds, data_cfg, tiny_model_cfg())
    batches = list(it)
    assert len(batches) == 2 and it.stats.bad == 2 and it.stats.reasons == {decode.Reason.NON_FINITE: 2}
    assert all(torch.isfinite(b["rs"]).all() and torch.isfinite(b["xy_extra"]).all() for b in batches)


def test_too_many_bad_rows_stops_with_examples(tmp_path) -> None:
    uri = _bad_manifest(tmp_path)
    with pytest.raises(pipeline.TooManyBadRowsError, match=r"unusable.*max_bad_fraction=10.0%.*Examples: bad-") as err:
        _collect(uri, train=False, max_bad_fraction=0.1, min_rows_before_bad_check=8)
    assert any(
        r in str(err.value) for r in (Reason.RS_UNDECODABLE, Reason.LONLAT_NAN, Reason.BAD_CRS, Reason.SV_UNDECODABLE)
    )


def test_streaming_split_shards_cover_the_data_once(s3_synthetic: str) -> None:
    """What Ray Train hands each worker: streaming_split shards; together they see every tile once."""
    data_cfg, model_cfg = tiny_data_cfg(batch_size=2, obs_per_tile=4), tiny_model_cfg()  # one visit per tile
    ds = pipeline.build_dataset(s3_synthetic, data_cfg, model_cfg, train=True)
    shards = ds.streaming_split(2, equal=True)
    import threading

    results: dict[int, tuple[int, int]] = {}

    def consume(i: int) -> None:
        it = pipeline.iter_training_batches(shards[i], data_cfg, model_cfg)
        n = sum(1 for _ in it)
        results[i] = (n, it.stats.seen)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results[0][1] + results[1][1] == 12 and results[0][1] == results[1][1] == 6
    assert results[0][0] == results[1][0] == 3


def test_the_first_chunk_is_given_before_the_second_is_pulled() -> None:
    """The iterator looks one chunk ahead (to know an epoch's last chunk), but not for the first:
    an epoch's first batch must not wait for its second."""
    pulled: list[int] = []

    def chunks():
        for i in range(3):
            pulled.append(i)
            yield i

    it = pipeline._with_last(chunks())
    assert next(it) == (0, False) and pulled == [0]
    assert list(it) == [(1, False), (2, True)]
    assert list(pipeline._with_last(iter([]))) == []


def test_every_decode_output_is_one_block(tmp_path) -> None:
    """Ray Data neither merges decode outputs (the first batch would wait for two) nor slices them
    (a batch would be concatenated from pieces): at the paper's sizes a decode output of 8 rows is
    ~8 MB, which a fixed 16 MiB block target merged in pairs."""
    from gair.configs.model import ModelConfig

    uri = synthetic.write_synthetic(str(tmp_path / "syn"), tiles=24, obs_per_tile=4, seed=3, rows_per_shard=12)
    data_cfg, model_cfg = tiny_data_cfg(obs_per_tile=4, decode_batch_size=8, batch_size=8), ModelConfig()
    spec = pipeline.decode_spec(data_cfg, model_cfg, train=True)
    per_sample = sum(a.nbytes for a in decode.empty_sample(spec).values())
    assert 8 * per_sample > pipeline.MIN_BLOCK_BYTES / 0.75  # the target follows the decode output here
    ds = pipeline.build_dataset(uri, data_cfg, model_cfg, train=True)
    rows = [len(block["ok"]) for block in ds.iter_batches(batch_size=None)]  # None: each block as it is
    assert sorted(rows) == [4, 4, 8, 8], rows  # 2 shards of 12 rows: 8 + 4 each


def test_read_ahead_pulls_the_next_item_while_the_caller_works() -> None:
    import threading

    pulled = [threading.Event() for _ in range(3)]

    def items():
        for i in range(3):
            pulled[i].set()
            yield i

    it = pipeline._read_ahead(items())
    assert next(it) == 0
    assert pulled[1].wait(10), "item 1 was not pulled while the caller held item 0"
    assert list(it) == [1, 2]

    def failing():
        yield 0
        raise OSError("shard unreadable")

    it = pipeline._read_ahead(failing())
    assert next(it) == 0
    with pytest.raises(OSError, match="shard unreadable"):
        next(it)

    endless = pipeline._read_ahead(iter(range(10**9)))
    assert next(endless) == 0
    endless.close()  # stops its thread: does not hang, does not read on


def test_a_shard_that_is_not_parquet_is_named_in_the_error(tmp_path) -> None:
    """Listing checks only the first shard's schema; a later shard that is not Parquet fails in its read task."""
    uri = synthetic.write_synthetic(str(tmp_path / "m"), tiles=4, obs_per_tile=2, seed=3, tile_size=40, sv_size=32)
    bad = Path(uri) / "zz-not-parquet.parquet"  # listed after the good shard
    bad.write_bytes(b"this is not a parquet file" * 10)
    data_cfg, model_cfg = tiny_data_cfg(obs_per_tile=2, shuffle_buffer=0), tiny_model_cfg()
    ds = pipeline.build_dataset(uri, data_cfg, model_cfg, train=False)
    with pytest.raises(Exception, match=r"zz-not-parquet\.parquet is not a Parquet file"):
        list(pipeline.iter_training_batches(ds, data_cfg, model_cfg))


def test_shard_groups_are_consecutive_runs_of_even_size() -> None:
    paths = [f"s{i}" for i in range(7)]
    groups = pipeline.shard_groups(paths, 3)
    assert [p for g in groups for p in g] == paths  # every shard once, in the order given
    assert sorted(len(g) for g in groups) == [2, 2, 3]
    assert pipeline.shard_groups(paths, 0) == [[p] for p in paths]  # 0: one task per shard
    assert pipeline.shard_groups(paths, 9) == [[p] for p in paths]  # never fewer shards than tasks
    assert pipeline.shard_groups([], 2) == []


def test_a_task_of_several_shards_gives_the_batches_of_one_task_per_shard(s3_synthetic: str) -> None:
    """4 shards read by one task (reading ahead across shard boundaries) or by 4 tasks: the same samples in
    the same order (without the local shuffle, whose draws depend on where Ray Data cuts blocks)."""
    one_each, _ = _collect(s3_synthetic, train=True, seed=5, shuffle_buffer=0, tasks_per_decode_worker=0)
    grouped, stats = _collect(s3_synthetic, train=True, seed=5, shuffle_buffer=0, tasks_per_decode_worker=1)
    assert stats.seen == 24 and len(grouped) == len(one_each) == 6  # 12 tiles, 2 visits each, 4 a batch
    for x, y in zip(one_each, grouped, strict=True):
        for k in x:
            assert torch.equal(x[k], y[k]), k


def test_record_batches_run_through_the_shards_in_turn(tmp_path) -> None:
    uri = synthetic.write_synthetic(
        str(tmp_path / "m"), tiles=5, obs_per_tile=2, seed=3, tile_size=40, sv_size=32, rows_per_shard=3
    )
    fs, _ = storage.resolve(uri)
    paths = storage.list_parquet(uri)
    assert len(paths) == 2
    got = [(path, batch.num_rows) for path, batch in pipeline._record_batches(fs, paths, 2)]
    assert got == [(paths[0], 2), (paths[0], 1), (paths[1], 2)]


def test_unpickling_an_epochs_dataset_imports_no_torch(tmp_path) -> None:
    """What the coordinator of each epoch's split (a new process) unpickles: the dataset with its read and
    decode functions and their arguments. Without torch such a process started ~2.5 s sooner and held
    235 MB instead of 703 MB (measured). The decode tasks import torch when they run."""
    import subprocess
    import sys

    import ray
    import ray.cloudpickle

    uri = synthetic.write_synthetic(str(tmp_path / "m"), tiles=4, obs_per_tile=2, seed=3, tile_size=40, sv_size=32)
    ds = pipeline.build_dataset(uri, tiny_data_cfg(obs_per_tile=2), tiny_model_cfg(), train=True)
    blob = tmp_path / "dataset.pkl"
    blob.write_bytes(ray.cloudpickle.dumps(ds))
    code = (  # a driver of this module's cluster (object references in the plan need one)
        "import pickle, sys, ray; ray.init(address=sys.argv[2], log_to_driver=False); "
        "ds = pickle.loads(open(sys.argv[1], 'rb').read()); "
        "print(type(ds).__name__, sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    )
    repo = Path(__file__).resolve().parents[2]
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.run([sys.executable, "-c", code, str(blob), address], cwd=repo, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "Dataset []", proc.stdout
