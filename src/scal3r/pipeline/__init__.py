"""The reconstruct orchestration: frames → chunks (+ loop chunks) → network → backend → exports.

Entry point: `reconstruct(ReconstructConfig(input=..., out=...), progress=...)`.
"""

from scal3r.pipeline.config import ReconstructConfig, resolve_device, resolve_dtype
from scal3r.pipeline.run import ReconstructResult, build_model, reconstruct

__all__ = ["ReconstructConfig", "ReconstructResult", "build_model", "reconstruct", "resolve_device", "resolve_dtype"]
