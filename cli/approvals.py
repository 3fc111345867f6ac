"""``labops approvals``: approve or reject a paused patch plan from Telegram (until stopped).

Long-polls the bot's ``getUpdates`` (no webhook, no open port). A press of Approve, Reject or
Canaries only under a plan resumes that paused run with the same input as the Resume form in the
Prefect UI, when the presser's user id is in ``systems.telegram.approvers``, the button is signed
by labops and the pause has not ended; otherwise it is answered and nothing changes.
"""

from __future__ import annotations

import argparse
from typing import Any

from cli.common import add_config_option, load, progress


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "approvals",
        help="approve paused patch plans from Telegram's buttons (long-polling listener)",
        description=(__doc__ or "").replace("``", "`"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from cli.deploy import require_server
    from deployments.telegram_approvals import main
    from labops.errors import ConfigError

    path, config = load(args)
    tg = config.systems.telegram
    if tg is None:
        raise ConfigError("systems.telegram: phone approval needs a Telegram bot in the config")
    api = require_server()
    progress(f"labops: listening for approvals from Telegram, resuming runs on {api}")
    main(str(path))
    return 0
