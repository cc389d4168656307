"""Stage 5, results: the store, leaderboards, significance, ablations, tables and their exports."""
