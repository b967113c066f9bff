"""Unit tests: one part at a time (renderers, storage, settings, the fakes themselves)."""
