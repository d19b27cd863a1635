"""``gs://`` against a GCS emulator (fake-gcs-server) on loopback: storage calls, the Ray Data
pipeline over a manifest and images stored by reference on ``gs://``, and the failures (an
absent object, an absent bucket, an unreachable endpoint)."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from gair.configs.data import DataConfig
from gair.data import decode, manifest, pipeline, storage, synthetic
from gair.data.decode import BadRowError, Reason
from gair.train import checkpoint, preflight
from tests._proxy import TcpProxy, assert_outage_is_named
from tests.conftest import _free_port, create_gcs_bucket
from tests.data.conftest import tile_centre_lonlat, tiny_data_cfg, tiny_model_cfg, write_rows


def _collect(manifest_uri: str, **cfg) -> list[dict[str, torch.Tensor]]:
    """Every batch of the manifest, unshuffled and unaugmented (the same data gives the same batches)."""
    data_cfg, model_cfg = tiny_data_cfg(shuffle_buffer=0, **cfg), tiny_model_cfg()
    ds = pipeline.build_dataset(manifest_uri, data_cfg, model_cfg, train=False)
    it = pipeline.iter_training_batches(ds, data_cfg, model_cfg)
    batches = list(it)
    assert it.stats.bad == 0, it.stats
    return batches


def _assert_same_batches(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert set(x) == set(y)
        for k in x:
            torch.testing.assert_close(x[k], y[k], rtol=0, atol=0, msg=k)


def _bucket_exists(endpoint: str, name: str) -> bool:
    try:
        urllib.request.urlopen(f"{endpoint}/storage/v1/b/{name}", timeout=10)
        return True
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise


# ------------------------------------------------------------------ where gs:// goes


def test_the_endpoint_comes_from_the_config_else_storage_emulator_host(monkeypatch) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    assert storage.S3Options().resolved().gcs_endpoint_url == ""  # Google's
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "localhost:4443")  # the emulator convention: no scheme
    assert storage.S3Options().resolved().gcs_endpoint_url == "http://localhost:4443"
    opts = storage.S3Options.from_config(DataConfig(gcs_endpoint_url="https://gcs.example.internal/"))
    assert opts.resolved().gcs_endpoint_url == "https://gcs.example.internal"  # the config wins
    for bad in ("ftp://host:1", "http://host:1/storage/v1", "http://user:hunter22@host:1"):
        with pytest.raises(ValueError, match="gs:// endpoint") as err:
            storage.S3Options(gcs_endpoint_url=bad).resolved()
        assert "hunter22" not in str(err.value)


def test_roundtrip_listing_and_absent_objects(gcs_bucket: str) -> None:
    uri = f"gs://{gcs_bucket}/dir/x.bin"
    storage.write_bytes(uri, b"\x00\x01payload")
    assert storage.read_bytes(uri) == b"\x00\x01payload"
    storage.write_bytes(f"gs://{gcs_bucket}/m/part-00001.parquet", b"")
    storage.write_bytes(f"gs://{gcs_bucket}/m/part-00000.parquet", b"")
    storage.write_bytes(f"gs://{gcs_bucket}/m/notes.txt", b"")
    assert storage.list_parquet(f"gs://{gcs_bucket}/m") == [
        f"{gcs_bucket}/m/part-00000.parquet",
        f"{gcs_bucket}/m/part-00001.parquet",
    ]
    storage.delete(uri)
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(uri)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        storage.list_parquet(f"gs://{gcs_bucket}/no-manifest")
    with pytest.raises(preflight.PreflightError, match=f"data.train_manifest: manifest gs://{gcs_bucket}/nope"):
        preflight.check_manifest(f"gs://{gcs_bucket}/nope", "data.train_manifest")
    # An image behind an absent gs:// object is a bad row ("missing file"), not a failed task.
    with pytest.raises(BadRowError) as err:
        decode.load_image_bytes(None, f"gs://{gcs_bucket}/rs/absent.tif", kind="rs", item_id="t0")
    assert err.value.reason == Reason.RS_MISSING_FILE and "not found" in str(err.value)


def test_listings_show_the_directories_that_objects_imply(gcs_bucket: str, tmp_path) -> None:
    """No directory marker objects: a run's checkpoints are still listed, and copied with their subdirectories."""
    for key in (
        "checkpoint_step00000002/train_state.json",
        "checkpoint_step00000004/step00000004/a.pt",
        "FINISHED.json",
    ):
        storage.write_bytes(f"gs://{gcs_bucket}/runs/r/{key}", b"1")
    run_uri = f"gs://{gcs_bucket}/runs/r"
    assert checkpoint.list_checkpoints(run_uri) == ["checkpoint_step00000004", "checkpoint_step00000002"]
    fs, path = storage.resolve(run_uri)
    storage.pafs.copy_files(f"{path}/checkpoint_step00000004", str(tmp_path / "c"), source_filesystem=fs)
    assert (tmp_path / "c" / "step00000004" / "a.pt").read_bytes() == b"1"


def test_buckets_are_never_created(gcs_server: str, gcs_bucket: str) -> None:
    absent = f"gair-absent-{_free_port()}"
    with pytest.raises(storage.BucketNotFoundError, match=f"bucket '{absent}' does not exist at {gcs_server}"):
        storage.write_bytes(f"gs://{absent}/x.bin", b"1")
    with pytest.raises(preflight.PreflightError, match=f"run.storage_path: bucket '{absent}' does not exist"):
        preflight.check_writable(f"gs://{absent}/runs", "run.storage_path")
    assert not _bucket_exists(gcs_server, absent)
    preflight.check_writable(f"gs://{gcs_bucket}/runs", "run.storage_path")  # the probe is written and deleted
    fs, path = storage.resolve(f"gs://{gcs_bucket}")
    assert fs.get_file_info(storage.pafs.FileSelector(path, recursive=True)) == []


def test_an_unreachable_endpoint_is_a_retryable_error_naming_it_not_not_found(gcs_server: str, gcs_bucket: str):
    proxy = TcpProxy(gcs_server)
    proxy.start()
    try:
        opts = storage.S3Options(gcs_endpoint_url=proxy.url, retry_time_limit_s=1)
        assert_outage_is_named(f"gs://{gcs_bucket}", opts, proxy, "GCS endpoint")
    finally:
        proxy.stop()


# ------------------------------------------------------------------ the pipeline (local Ray)


def test_pipeline_reads_a_gs_manifest_with_images_by_reference(
    gcs_server: str, ray_start_2_cpus, tmp_path, monkeypatch
) -> None:
    """The same synthetic dataset (images as files, referenced by URI) on gs:// and on local
    disk gives the same batches; the endpoint comes from data.gcs_endpoint_url."""
    bucket = create_gcs_bucket(gcs_server, f"gair-syn-{_free_port()}")
    kwargs = dict(tiles=8, obs_per_tile=3, seed=5, tile_size=40, sv_size=40, rows_per_shard=3, inline=False)
    gs_uri = synthetic.write_synthetic(f"gs://{bucket}/syn", **kwargs)
    local_uri = synthetic.write_synthetic(str(tmp_path / "syn"), **kwargs)
    rows = [r for batch in manifest.iter_manifest_rows(gs_uri) for r in batch]
    assert len(rows) == 8 and all(
        r["rs_bytes"] is None and r["rs_uri"].startswith(f"gs://{bucket}/syn/rs/") for r in rows
    )
    assert all(
        o["sv_bytes"] is None and o["sv_uri"].startswith(f"gs://{bucket}/syn/sv/")
        for r in rows
        for o in r["observations"]
    )

    # Only the config names the emulator now: the environment points nowhere.
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{_free_port()}")
    from_gs = _collect(gs_uri, gcs_endpoint_url=gcs_server)
    _assert_same_batches(from_gs, _collect(local_uri))
    assert len(from_gs) == 2 and from_gs[0]["rs"].std() > 0.01 and from_gs[0]["sv_mask"].all()


def test_real_tiles_by_reference_on_gs(gcs_server: str, ray_start_2_cpus, real_tiles, tmp_path) -> None:
    """Real Sentinel-2 GeoTIFFs (UTM) and JPEG street views behind gs:// URIs decode to exactly
    what the same files give from local disk."""
    bucket = create_gcs_bucket(gcs_server, f"gair-real-{_free_port()}")
    rng = np.random.default_rng(0)
    gs_rows, local_rows = [], []
    for i, tile in enumerate(real_tiles[:8]):
        jpg = decode.encode_jpeg(synthetic.render_sv(rng, i % 6, 48))
        local_sv = tmp_path / f"sv-{i}.jpg"
        local_sv.write_bytes(jpg)
        for rows, rs_uri, sv_uri in (
            (gs_rows, f"gs://{bucket}/rs/{tile.name}", f"gs://{bucket}/sv/{i}.jpg"),
            (local_rows, str(tile), str(local_sv)),
        ):
            if rs_uri.startswith("gs://"):
                storage.write_bytes(rs_uri, tile.read_bytes())
                storage.write_bytes(sv_uri, jpg)
            info, names, _ = manifest.read_tile_header(rs_uri)
            obs = manifest.observation(f"real-{i}", tuple(tile_centre_lonlat(tile)), sv_uri=sv_uri)
            rows.append(manifest.tile_row(f"real/{tile.stem}", info, names, [obs], rs_uri=rs_uri))
    gs_manifest = write_rows(f"gs://{bucket}/manifest", gs_rows)
    local_manifest = write_rows(str(tmp_path / "manifest"), local_rows)
    report = manifest.validate_manifest(gs_manifest, workers=2, required_bands=tiny_model_cfg().rs_bands)
    assert report.exit_code == 0 and report.tiles == 8, report
    from_gs = _collect(gs_manifest, obs_per_tile=2)
    _assert_same_batches(from_gs, _collect(local_manifest, obs_per_tile=2))
    assert len(from_gs) == 2 and all(b["rs"].std() > 0.01 for b in from_gs)
