"""Wrappers around existing toolkits (torchvision now; transformers and OpenBackdoor later)."""
