"""Server side of the device bundles: a trained run -> an export directory (docs/bundle-format.md).

The writers are here; ``peel.methods.export_run`` exports a run of any method through them.
"""

from peel.export.export import export_fixed, export_peel

__all__ = ["export_fixed", "export_peel"]
