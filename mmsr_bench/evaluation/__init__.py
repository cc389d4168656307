"""Stage 3, evaluation: the metric engine and the training/validation loop the harness owns."""
