"""Training: run config, the loop, the feature cache, jobs and workers, the run store, presets."""
