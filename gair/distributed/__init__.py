"""Distributed glue: the DeepSpeed config builder and torch.distributed helpers.

Importing this package does not import DeepSpeed (workers import it lazily).
"""

from gair.distributed.deepspeed_config import build_deepspeed_config
from gair.distributed.process_group import all_true, broadcast_object, get_rank, get_world_size, mean_across_workers

__all__ = [
    "all_true",
    "broadcast_object",
    "build_deepspeed_config",
    "get_rank",
    "get_world_size",
    "mean_across_workers",
]
