"""Stage 4, models: the adapter API and lazy registry, the conformance kit, one module per model family."""
