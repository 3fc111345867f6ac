"""Certificates: discovery, probing, classification, renewal and the report of the lab's TLS."""
