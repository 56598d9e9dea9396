"""Herald's stream-processing side: routing, delivery, retries and the destination table."""
