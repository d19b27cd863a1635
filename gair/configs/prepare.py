"""Configuration of ``jobs/prepare_tiles.py``: street views + Sentinel-2 scenes -> a training manifest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gair.configs.base import field
from gair.sensors import S2_BANDS_12

Resampling = Literal["nearest", "bilinear", "cubic", "average"]


@dataclass
class StreetViewColumns:
    id: str = field("id", help="Column of the street-view id (unique; becomes the manifest's obs_id).")
    lon: str = field(
        "lon", help="Longitude column (degrees, WGS84). GeoParquet: may be absent if `geometry` holds points."
    )
    lat: str = field("lat", help="Latitude column (degrees, WGS84).")
    image: str = field("image", help="Image path or URI column; relative paths are relative to the table's folder.")
    capture_time: str = field(
        "capture_time", help="Optional ISO 8601 capture-time column (used to pick the scene nearest in time)."
    )
    heading: str = field("heading", help="Optional heading column (degrees), copied into the manifest.")


@dataclass
class PrepareConfig:
    street_views: str = field("", help="Street-view table: CSV, Parquet or GeoParquet (local path or s3://); required.")
    columns: StreetViewColumns = field(default_factory=StreetViewColumns, help="Column names of the street-view table.")
    stac: str = field(
        "", help="STAC ItemCollection JSON (file or s3:// URI) listing Sentinel-2 L2A scenes; or use `cogs`."
    )
    cogs: list[str] = field(
        default_factory=list,
        help="Scenes as COG URIs instead of STAC: one multi-band file per scene, bands named by their "
        "descriptions (or B1..B12 for 12 bands); a band described `SCL` is the scene classification.",
    )
    out: str = field(
        "",
        help="Output prefix (local or s3://): manifest/, tiles/ (when not inline), rejects.csv, summary.json, "
        "_shards/ (resume records); required.",
    )
    tile_size_m: float = field(
        2000.0, help="Side of a square cell (one output tile) in metres on the scene's UTM grid."
    )
    resolution_m: float = field(10.0, help="Output pixel size in metres (20 m and 60 m bands are resampled to it).")
    min_obs: int = field(1, help="Cells with fewer street views than this are skipped (counted in the summary).")
    bands: tuple[str, ...] = field(
        S2_BANDS_12, help="Bands of the output tiles, in manifest order (must include model.rs_bands to train)."
    )
    resampling: Resampling = field(
        "bilinear", help="Resampling of bands coarser than resolution_m (the SCL band is always nearest)."
    )
    max_cloud_fraction: float = field(
        0.1, help="Reject a cell when more of its pixels than this are cloud (SCL classes cloud_classes)."
    )
    max_nodata_fraction: float = field(
        0.05,
        help="Reject a cell when more of its pixels than this are no data (SCL nodata_classes, or 0 in all bands).",
    )
    cloud_classes: tuple[int, ...] = field(
        (3, 8, 9, 10), help="SCL classes counted as cloud: 3 shadow, 8 medium, 9 high probability, 10 thin cirrus."
    )
    nodata_classes: tuple[int, ...] = field((0, 1), help="SCL classes counted as no data: 0 no data, 1 defective.")
    max_scenes_per_cell: int = field(
        4, help="Candidate scenes examined per cell (by scene cloud cover, then time), best cell cloud first."
    )
    inline: bool = field(
        True, help="Store each tile's GeoTIFF inside the manifest (rs_bytes); false: COGs under out/tiles/ (rs_uri)."
    )
    sv_inline: bool = field(False, help="Copy street-view image bytes into the manifest (sv_bytes) instead of URIs.")
    cells_per_shard: int = field(
        64, help="Cells per shard: the unit of output (one Parquet file) and of resume after a crash."
    )
    num_cpus_per_task: float = field(1.0, help="CPUs reserved by each Ray Data shard task.")
    concurrency: int = field(0, help="Shard tasks running at once (0: as many as the cluster's CPUs allow).")
    overwrite: bool = field(
        False, help="Delete earlier outputs under `out` first; otherwise a rerun resumes (skips complete shards)."
    )
    s3_endpoint_url: str = field("", help="S3-compatible endpoint URL; empty: AWS_ENDPOINT_URL from the environment.")
    s3_region: str = field("", help="S3 region; empty: AWS_REGION / AWS_DEFAULT_REGION, else us-east-1.")
    gcs_endpoint_url: str = field(
        "",
        help="gs:// endpoint, http(s)://host[:port] (e.g. a GCS emulator such as fake-gcs-server); empty: "
        "STORAGE_EMULATOR_HOST from the environment, else Google Cloud Storage. A plain-http endpoint is "
        "reached anonymously, any other with Google's default credentials (GOOGLE_APPLICATION_CREDENTIALS).",
    )

    def validate(self) -> None:
        if not self.street_views:
            raise ValueError("street_views is required (a CSV, Parquet or GeoParquet table)")
        if not self.out:
            raise ValueError("out is required (an output prefix)")
        if bool(self.stac) == bool(self.cogs):
            raise ValueError("give exactly one of `stac` (an ItemCollection) or `cogs` (a list of COG URIs)")
        if self.tile_size_m <= 0 or self.resolution_m <= 0:
            raise ValueError("tile_size_m and resolution_m must be > 0")
        if abs(self.tile_size_m / self.resolution_m - round(self.tile_size_m / self.resolution_m)) > 1e-9:
            raise ValueError(
                f"tile_size_m ({self.tile_size_m}) must be a multiple of resolution_m ({self.resolution_m})"
            )
        if self.min_obs < 1 or self.max_scenes_per_cell < 1 or self.cells_per_shard < 1:
            raise ValueError("min_obs, max_scenes_per_cell and cells_per_shard must be >= 1")
        for name in ("max_cloud_fraction", "max_nodata_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.bands or len(set(self.bands)) != len(self.bands):
            raise ValueError(f"bands must be a non-empty list of distinct names, got {self.bands}")
        if self.num_cpus_per_task <= 0 or self.concurrency < 0:
            raise ValueError("num_cpus_per_task must be > 0 and concurrency >= 0")

    @property
    def tile_pixels(self) -> int:
        return round(self.tile_size_m / self.resolution_m)
