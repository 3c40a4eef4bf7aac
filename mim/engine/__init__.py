"""The training engine: backends, optimiser and schedule, checkpoints, logging, the loop."""
