"""The `rebadge` command: one entry point over the agent, the platform, provisioning and the demo."""
