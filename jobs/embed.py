"""Export GAIR embeddings to GeoParquet with Ray Data, and log the export to MLflow.

Inputs (at least one of --points / --manifest):
  --points FILE              location embeddings of points (CSV, Parquet or GeoParquet: lon, lat, id)
  --manifest URI             global RS embedding of every tile (one Polygon row per tile)
  --manifest URI --observations
                             per street view: location, localized RS (NILI) and SV embeddings
  --points FILE --manifest URI
                             per point: location embedding and the localized RS embedding in the
                             first tile (manifest order) that covers it; points outside every tile
                             keep their row (rs_embedding NaN) and are counted and listed

Output: GeoParquet shards (part-00000.parquet, ...) under --out (local or s3://): WKB
`geometry` in OGC:CRS84 with GeoParquet 1.1 `geo` metadata, `id`, `tile_id`, `lon`, `lat`,
`error`, and each embedding as a fixed_size_list<float32>[D] column (NaN where the row's
`error` says it could not be computed).

Examples:
    python jobs/embed.py --model models:/gair@current --points cities.csv --out s3://bucket/emb/cities
    python jobs/embed.py --model runs:/<run_id>/model --manifest s3://bucket/heldout/manifest \\
        --observations --out ./emb/heldout
    python jobs/embed.py --model ./runs/gair-smoke/export --points pts.parquet --manifest ./data/manifest \\
        --out ./emb/pts --no-mlflow

Exit codes: 0 done, 2 bad input (unknown model, missing columns, bad coordinates,
unreadable manifest, existing output without --overwrite).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gair.serving.batch import BadInputError, EmbedOptions  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH or a local export / pyfunc model directory")  # fmt: skip
    p.add_argument("--points", help="CSV/Parquet/GeoParquet of points: lon, lat (or a WKB Point geometry), id")
    p.add_argument("--manifest", help="manifest directory or URI (tiles and their observations)")
    p.add_argument("--observations", action="store_true",
                   help="with --manifest alone: one row per observation instead of one per tile")  # fmt: skip
    p.add_argument("--out", required=True, help="output directory, local path or s3:// URI")
    p.add_argument("--overwrite", action="store_true", help="replace Parquet files already in --out")
    p.add_argument("--id-column", default="id", help="id column of --points (default: id; row number if absent)")
    p.add_argument("--query-mode", choices=("nili", "bilinear", "bicubic"),
                   help="how localized RS embeddings are sampled (default: the model's, NILI)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=1024, help="points per model batch (default 1024)")
    p.add_argument("--tile-batch-size", type=int, default=8, help="manifest tiles per actor call (default 8)")
    p.add_argument("--num-workers", type=int,
                   help="model actors (default: one per GPU when the cluster has GPUs, else 1)")  # fmt: skip
    p.add_argument("--num-gpus-per-worker", type=float,
                   help="GPUs per actor (default: 1 when the cluster has GPUs, else 0)")  # fmt: skip
    p.add_argument("--num-cpus-per-worker", type=float, default=1.0, help="CPUs per actor (default 1)")
    p.add_argument("--rows-per-shard", type=int, default=100_000, help="rows per output file (default 100000)")
    p.add_argument("--plot-points", type=int, default=50_000, help="rows in the MLflow map plot (default 50000)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    p.add_argument("--experiment", default="gair-embed", help="MLflow experiment (default gair-embed)")
    p.add_argument("--run-name", help="MLflow run name (default embed-<model>)")
    p.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow (models:/ URIs still need it)")
    return p.parse_args(argv)


def options(args: argparse.Namespace) -> EmbedOptions:
    """Check option combinations; BadInputError says what is wrong."""
    if not (args.points or args.manifest):
        raise BadInputError("give --points, --manifest or both")
    if args.observations and (args.points or not args.manifest):
        raise BadInputError("--observations goes with --manifest alone (not with --points)")
    for name in ("batch_size", "tile_batch_size", "rows_per_shard"):
        if getattr(args, name) < 1:
            raise BadInputError(f"--{name.replace('_', '-')} must be >= 1")
    if args.num_workers is not None and args.num_workers < 1:
        raise BadInputError("--num-workers must be >= 1")
    return EmbedOptions(
        model=args.model, out=args.out, points=args.points, manifest=args.manifest, observations=args.observations,
        id_column=args.id_column, query_mode=args.query_mode, batch_size=args.batch_size,
        tile_batch_size=args.tile_batch_size, num_workers=args.num_workers,
        num_gpus_per_worker=args.num_gpus_per_worker, num_cpus_per_worker=args.num_cpus_per_worker,
        rows_per_shard=args.rows_per_shard, overwrite=args.overwrite, plot_points=args.plot_points,
    )  # fmt: skip


def tracking_uri(args: argparse.Namespace) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db (credentials moved out of the URI)."""
    from gair.tracking.mlflow_run import resolve_tracking_uri

    return resolve_tracking_uri(args.tracking_uri or "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from gair.eval.model_uri import ModelNotFoundError, resolve_model

    try:
        opts = options(args)
        uri = tracking_uri(args)
        with tempfile.TemporaryDirectory(prefix="gair-embed-model-") as tmp:
            model = resolve_model(opts.model, uri, dst_dir=tmp)
            from gair.cli import connect_ray
            from gair.serving.batch import plan_inputs, run_embed

            plan = plan_inputs(opts)  # bad input fails here, before Ray starts
            connect_ray(log_to_driver=True)
            summary = run_embed(opts, model.local_dir, plan)
    except (BadInputError, ModelNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report(summary)
    if not args.no_mlflow:
        run_id = log_export(summary, opts, model, uri, args)
        print(f"MLflow run {run_id}")
    return 0


def report(summary) -> None:
    print(f"{summary.rows} rows ({summary.kind}) in {len(summary.shards)} shard(s) at {summary.out}")
    if summary.outside:
        print(f"{len(summary.outside)} point(s) outside every tile (rows kept, rs_embedding NaN):")
        for pid, lon, lat in summary.outside[:20]:
            print(f"  {pid}: lon {lon:.6f}, lat {lat:.6f}")
        if len(summary.outside) > 20:
            print(f"  ... and {len(summary.outside) - 20} more (outside_points.csv in the MLflow run)")
    if summary.bad_tiles:
        print(f"{len(summary.bad_tiles)} unreadable tile(s) skipped:")
        for _tile_id, why in summary.bad_tiles[:20]:
            print(f"  {why}")
    if summary.error_count:
        print(f"{summary.error_count} row(s) with an error (see the `error` column)")


def log_export(summary, opts: EmbedOptions, model, uri: str, args: argparse.Namespace) -> str:
    """An MLflow run with the output location, counts, the map and the lists of problem rows."""
    from gair.serving.plots import plot_embedding_map
    from gair.tracking.mlflow_run import create_run, experiment_id, strip_credentials

    tags = {
        "gair.embed.output": strip_credentials(summary.out),
        "gair.embed.kind": summary.kind,
        "gair.embed.model_uri": opts.model,
        **({"gair.embed.source_run_id": model.run_id} if model.run_id else {}),
        **({"gair.embed.model_version": f"{model.registered_name}/{model.version}"} if model.version else {}),
    }
    name = args.run_name or f"embed-{model.registered_name or Path(model.local_dir).name}"
    params = {
        "model": opts.model, "points": strip_credentials(opts.points or ""),
        "manifest": strip_credentials(opts.manifest or ""), "out": strip_credentials(opts.out),
        "kind": summary.kind, "query_mode": opts.query_mode or "model default",
    }  # fmt: skip
    run = create_run(uri, experiment_id(uri, args.experiment), name, tags=tags, params=params)
    metrics = {
        "rows": summary.rows, "shards": len(summary.shards), "points_outside_tiles": len(summary.outside),
        "rows_with_error": summary.error_count, "bad_tiles": len(summary.bad_tiles), "seconds": summary.seconds,
    }  # fmt: skip
    run.log_metrics(metrics)
    with tempfile.TemporaryDirectory(prefix="gair-embed-") as tmp:
        tmp = Path(tmp)
        files = {"summary.json": json.dumps({"output": strip_credentials(summary.out), **metrics}, indent=2)}
        if summary.outside:
            files["outside_points.csv"] = _csv(["id", "lon", "lat"], summary.outside)
        if summary.row_errors or summary.bad_tiles:
            files["errors.csv"] = _csv(["id", "error"], summary.bad_tiles + summary.row_errors)
        for fname, text in files.items():
            (tmp / fname).write_text(text)
            run.log_artifact(tmp / fname)
        if summary.sample_lonlat is not None and len(summary.sample_lonlat):
            plot = plot_embedding_map(summary.sample_lonlat, summary.sample_emb, tmp / "embedding_map.png")
            run.log_artifact(plot)
    run.end()
    return run.run_id


def _csv(header: list[str], rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


if __name__ == "__main__":
    sys.exit(main())
