"""Server side of the device bundles: a trained run -> an export directory (docs/bundle-format.md)."""

from peel.export.export import export_run

__all__ = ["export_run"]
