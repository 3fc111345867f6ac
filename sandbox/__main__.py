"""``python -m sandbox run|start|stop|status --dir DIR``."""

import sys

from sandbox.runner import main

sys.exit(main())
