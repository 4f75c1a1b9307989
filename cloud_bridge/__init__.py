"""The platform: certificates, leases, the verified ledger of gateway records, and the APIs in front of them."""
