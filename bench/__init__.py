"""Herald's benchmark suite: `python -m bench.run [--quick] [scenario ...]`."""
