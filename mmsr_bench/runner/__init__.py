"""Stage 6, runner: one run, sweeps of cells, and the study grid."""
