"""What every config-driven job shares: ``--config``/``--set`` parsing and joining Ray."""

from __future__ import annotations

import argparse

from gair.configs import format_help


def config_parser(doc: str | None, cfg_cls: type, example: str) -> argparse.ArgumentParser:
    """An argument parser with ``--config FILE`` and repeatable ``--set KEY=VALUE``.

    ``--help`` ends with every key of ``cfg_cls``, its default and its documentation.
    """
    p = argparse.ArgumentParser(
        description=doc, epilog=format_help(cfg_cls), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", help=f"YAML config file (e.g. {example})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    return p


def connect_ray(**init_kwargs) -> None:
    """Join the cluster of RAY_ADDRESS / `ray start`, else start a local one."""
    import ray

    if not ray.is_initialized():
        ray.init(**init_kwargs)
