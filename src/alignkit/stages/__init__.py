"""The pipeline's stages, one file each, read top to bottom: setup, loop, save."""
