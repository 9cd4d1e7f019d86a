"""HTTP layer: thin FastAPI routes; authentication, tenant resolution, limits, status codes."""
