"""One training/evaluation loop for pre-training and fine-tuning: optimiser and schedule, precision,
distributed data parallel, deterministic sharded sampling, atomic checkpoints and exact resume."""
