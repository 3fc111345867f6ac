"""The sandbox homelab: local servers speaking the real protocols of Proxmox VE, PBS, an SSH fleet
and the lab's other services, with seeded state, latency and injectable faults.

A black box to the product: nothing here imports labops, flows, tasks or blocks, and the product
finds the sandbox only through the config file the sandbox writes.
"""
