"""Shared model toolkits (LLM backbones, fine-tuning, scoring, captioning; feature encoders), imported by model families, never from another family's module."""
