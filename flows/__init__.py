"""The operations, one flow per module.

Importing the package installs labops' fix to Prefect's flow-run heartbeat
(``labops.prefect_patches``), so every labops flow run gets it wherever it runs: in ``labops
run``, a serve process or a worker's flow process (they all import the flow's module). It also
freezes what Prefect's and labops' imports created (``labops.gctune``), so the garbage collector
stops walking ~130,000 long-lived objects on every full collection during a run.
"""

from labops.gctune import freeze_imports as _freeze_imports
from labops.prefect_patches import apply as _apply_prefect_fixes

_apply_prefect_fixes()
_freeze_imports()
