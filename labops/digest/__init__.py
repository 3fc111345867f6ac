"""The security digest's pure core: findings, comparison with the last digest, rendering and the
redaction applied before anything leaves the lab. Nothing here imports prefect or does I/O."""
