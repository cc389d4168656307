"""Stage 1, data: loaders of raw files, the synthetic generator, images, perturbations, the split types adapters see."""
