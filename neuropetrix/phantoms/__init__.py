"""Synthetic PET/CT studies with an analytically known answer (tests, benchmarks, `neuropetrix demo`)."""
