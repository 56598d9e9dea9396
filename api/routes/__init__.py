"""Route tables of the API: parse → call → respond."""
