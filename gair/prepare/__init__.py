"""From street views and Sentinel-2 scenes to a training manifest (``jobs/prepare_tiles.py``).

- :mod:`gair.prepare.inputs`: the street-view table (CSV, Parquet, GeoParquet) and the scenes
  (a STAC ItemCollection read with pystac, or a list of COGs).
- :mod:`gair.prepare.grid`: street views -> square cells on the scene's UTM grid.
- :mod:`gair.prepare.cut`: one cell -> one tile: scene choice, windowed reads, cloud and
  no-data rejection, the manifest row.
- :mod:`gair.prepare.rangeio`: range reads of COGs on object storage that count the bytes fetched.
- :mod:`gair.prepare.driver`: the Ray Data job (shards of cells, resume, rejects, summary).

Everything but the driver is plain Python, numpy and rasterio.
"""
