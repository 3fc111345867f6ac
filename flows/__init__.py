"""The operations, one flow per module.

Importing the package installs labops' fix to Prefect's flow-run heartbeat
(``labops.prefect_patches``), so every labops flow run gets it wherever it runs: in ``labops
run``, a serve process or a worker's flow process (they all import the flow's module).
"""

from labops.prefect_patches import apply as _apply_prefect_fixes

_apply_prefect_fixes()
