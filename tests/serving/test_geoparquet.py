"""gair.serving.geoparquet and plots: files GeoPandas reads as a layer; a map drawn offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gair.serving import geoparquet
from gair.serving.plots import coastline_rings, pca_rgb, plot_embedding_map


def test_shards_open_in_geopandas_with_crs_and_embeddings(tmp_path: Path):
    import geopandas as gpd

    rng = np.random.default_rng(0)
    lonlat = np.column_stack([rng.uniform(-180, 180, 25), rng.uniform(-90, 90, 25)])
    emb = rng.normal(size=(25, 8)).astype(np.float32)
    valid = np.arange(25) % 5 != 0
    writer = geoparquet.GeoParquetWriter(str(tmp_path / "out"), ["Point"], rows_per_shard=10)
    for lo in range(0, 25, 7):
        sl = slice(lo, lo + 7)
        writer.write(
            pa.table(
                {
                    "id": [str(i) for i in range(25)][sl],
                    "emb": geoparquet.embedding_array(emb[sl], valid[sl]),
                    "geometry": pa.array(geoparquet.wkb_points(lonlat[sl]), pa.binary()),
                }
            )
        )
    shards = writer.close()
    assert len(shards) == 3 and writer.rows_written == 25
    meta = json.loads(pq.read_schema(shards[0]).metadata[b"geo"])
    assert meta["primary_column"] == "geometry" and meta["columns"]["geometry"]["encoding"] == "WKB"
    x0, y0, x1, y1 = meta["columns"]["geometry"]["bbox"]
    assert x0 == lonlat[:10, 0].min() and y1 == lonlat[:10, 1].max()
    assert pq.read_schema(shards[0]).field("emb").type == pa.list_(pa.float32(), 8)

    gdf = gpd.read_parquet(tmp_path / "out")
    assert gdf.crs.equals("OGC:CRS84") and gdf.crs.to_epsg() in (4326, None)
    np.testing.assert_array_equal(np.column_stack([gdf.geometry.x, gdf.geometry.y]), lonlat)
    got = np.stack(gdf["emb"].to_numpy())
    np.testing.assert_array_equal(got[valid], emb[valid])
    assert np.isnan(got[~valid]).all()


def test_wkb_round_trip():
    pt = geoparquet.wkb_points(np.array([[12.5, -41.25]]))[0]
    assert geoparquet.parse_wkb_point(pt) == (12.5, -41.25)
    import shapely

    ring = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], float)
    assert shapely.from_wkb(geoparquet.wkb_polygon(ring)).area == 1.0
    assert geoparquet.parse_wkb_point(shapely.to_wkb(shapely.Point(3, 4), byte_order=0)) == (3.0, 4.0)


def test_map_with_offline_coastlines(tmp_path: Path):
    rings = coastline_rings("c")
    assert len(rings) > 100
    all_pts = np.concatenate(rings)
    assert np.abs(all_pts[:, 1]).max() <= 90 and all_pts[:, 0].min() < -100 and all_pts[:, 0].max() > 100
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(50, 16))
    rgb = pca_rgb(emb)
    assert rgb.shape == (50, 3) and rgb.min() >= 0 and rgb.max() <= 1
    path = plot_embedding_map(rng.uniform(-10, 10, (50, 2)), emb, tmp_path / "map.png")
    assert path.stat().st_size > 10_000


def test_shards_to_s3(s3_bucket: str):
    import geopandas as gpd

    from gair.data import storage

    uri = f"s3://{s3_bucket}/embeddings/run1"
    writer = geoparquet.GeoParquetWriter(uri, ["Point"], rows_per_shard=2)
    lonlat = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    writer.write(
        pa.table(
            {
                "emb": geoparquet.embedding_array(np.eye(3, dtype=np.float32)),
                "geometry": pa.array(geoparquet.wkb_points(lonlat), pa.binary()),
            }
        )
    )
    assert len(writer.close()) == 2
    fs, path = storage.resolve(uri)
    gdf = gpd.read_parquet(path, filesystem=fs)
    assert gdf.crs.equals("OGC:CRS84") and sorted(gdf.geometry.x) == [1.0, 3.0, 5.0]
