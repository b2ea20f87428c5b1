"""Plain helpers the stages share: optimizer and schedule, data order, checkpoints, metrics, progress."""
