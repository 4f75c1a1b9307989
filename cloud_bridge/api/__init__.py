"""The HTTP API (FastAPI) for people and tools; OpenAPI at /openapi.json."""
