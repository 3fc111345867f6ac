"""The ``labops`` command: run flows, check the config, manage the Prefect server and sandbox."""
