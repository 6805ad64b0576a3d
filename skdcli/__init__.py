"""skd: self-knowledge-distillation recipes on one shared engine."""

__version__ = "0.1.0"
