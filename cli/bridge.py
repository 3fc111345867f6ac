"""``labops bridge``: the MQTT bridge between the lab's bus and Prefect (until stopped).

- ``<platform.mqtt_run_topic>/<flow>`` with a JSON object of parameters starts that deployment
  when ``platform.triggers`` allows it (anything else, and every retained message, is refused
  with one warning line; a ``request_id`` starts at most one run);
- every flow-run state change goes to ``<platform.mqtt_events_topic>/<flow>/<state>`` as JSON;
- failed, crashed and timed-out runs, and runs Late or Pending past
  ``platform.late_after_minutes``, are alerted once (Telegram and MQTT).
"""

from __future__ import annotations

import argparse
from typing import Any

from cli.common import RawDescriptionFormatter, add_config_option, load, progress


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "bridge",
        help="connect the MQTT bus to Prefect: runs in, state changes and alerts out",
        description=(__doc__ or "").replace("``", "`"),
        formatter_class=RawDescriptionFormatter,
    )
    add_config_option(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from cli.deploy import require_server
    from deployments.mqtt_bridge import main

    path, config = load(args)
    if config.systems.mqtt is None:
        from labops.errors import ConfigError

        raise ConfigError("systems.mqtt: the bridge needs an MQTT broker in the config")
    api = require_server()
    progress(
        f"labops: bridging {config.systems.mqtt.host}:{config.systems.mqtt.port} "
        f"({config.platform.mqtt_run_topic}/<flow>) and {api}"
    )
    main(str(path))
    return 0
