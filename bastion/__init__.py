"""An SSH access gateway that terminates `ssh -J` and logs into targets with per-session certificates."""

__version__ = "0.1.0"
