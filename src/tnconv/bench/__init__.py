"""Benchmarks of tnconv against PyTorch (SPEC §7)."""
