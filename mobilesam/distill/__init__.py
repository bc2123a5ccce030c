"""Decoupled distillation: the teacher embedding cache, student encoder training, decoder
fine-tuning and student-vs-teacher evaluation."""
