"""nlp-embed: self-knowledge distillation from the output-embedding space (Hahn & Choi, RANLP 2019)."""
