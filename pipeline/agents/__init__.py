"""Faust agents: thin loops that call the pure logic in pipeline/."""
