"""Classic in-betweening (SLERP + spline root): the instant fallback and the reference to beat."""

from anymole.baseline.interp import inbetween, interpolate, monotone_cubic

__all__ = ["inbetween", "interpolate", "monotone_cubic"]
