"""The gateway agent: verifies leases, enforces the quota with a write-ahead journal, rebadges over radios."""
