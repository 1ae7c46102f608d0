"""Policies on Cortex-M cores: cross-build a C export (build), run it in an emulator (emulate) and count
its cycles from the cores' instruction timings (cycles)."""
