"""Decoupled distillation: teacher embedding cache (more to come: training, evaluation)."""
