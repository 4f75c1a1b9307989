"""Durable file writes shared by the parties that keep files on a gateway (the agent and provisioning)."""
