"""GAIR model code: pure PyTorch + timm (no Ray, DeepSpeed or MLflow here)."""

from gair.models.gair import GAIR, QUERY_MODES, build_model
from gair.models.location_encoder import LocationEncoder
from gair.models.nili import NILI
from gair.models.rs_encoder import RSEncoder
from gair.models.sv_encoder import SVEncoder

__all__ = ["GAIR", "LocationEncoder", "NILI", "QUERY_MODES", "RSEncoder", "SVEncoder", "build_model"]
