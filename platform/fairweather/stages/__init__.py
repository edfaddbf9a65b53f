"""Stages: the only code that touches Ray. Each reads the tables the previous stage wrote and writes its own."""
