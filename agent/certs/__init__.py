"""Trust on the gateway: pinned issuer keys, the gateway's own identity, and lease checks."""
