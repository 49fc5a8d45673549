"""Model inputs built from task rows, and their scoring: the parts that both the trainers
(held-out evaluation during training) and ``latentrl eval`` use, so trainers never import
``latentrl.eval``."""
