"""GAIR objectives (pure PyTorch; collectives via torch.distributed only)."""

from gair.losses.contrastive import TERMS, GAIRLoss
from gair.losses.queue import LocationQueue, random_lonlat

__all__ = ["TERMS", "GAIRLoss", "LocationQueue", "random_lonlat"]
