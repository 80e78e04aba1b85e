"""scal3r: long-video 3D reconstruction with test-time-trained global memory.

This is zju3dv's Scal3R ("Scalable Test-Time Training for Large-Scale 3D Reconstruction",
CVPR 2026), not the NVlabs method of the same name.
"""

__version__ = "0.1.0"

__all__ = ["Scal3R", "infer_chunks", "__version__"]


def __getattr__(name):
    # Lazy so that `import scal3r` (and `scal3r --help`) does not pay for importing torch.
    if name == "Scal3R":
        from scal3r.model.scal3r import Scal3R

        return Scal3R
    if name == "infer_chunks":
        from scal3r.engine.runner import infer_chunks

        return infer_chunks
    raise AttributeError(name)
