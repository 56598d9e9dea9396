"""Herald's HTTP API: event destinations and events (aiohttp)."""
