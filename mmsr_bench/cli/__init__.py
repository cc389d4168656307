"""Stage 7, the `bench` command: command modules only."""
