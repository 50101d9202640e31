"""vmopslib: the core of saltext-vmops.

All cloud logic and step machines live here, free of Salt's loader: the
execution module, runner, state and orchestration files of the pack are thin
adapters over it.  Imported as a plain package; the loader modules put its
directory on ``sys.path`` when the pack is synced from the state tree.
"""

__version__ = "0.1.0"
