"""AnyMoLe Bridge: motion in-betweening for any rigged character.

Importing the package does no work: no GPU, disk or network access.
"""

from anymole.errors import (
    AnymoleError,
    AssetError,
    InvalidInput,
    JobCancelled,
    ModelUnavailable,
    NotFound,
    ResourceExhausted,
)

__version__ = "0.1.0"

__all__ = [
    "AnymoleError",
    "AssetError",
    "InvalidInput",
    "JobCancelled",
    "ModelUnavailable",
    "NotFound",
    "ResourceExhausted",
    "__version__",
]
