"""The one trainer every variant uses, and the run that ``vaezoo train`` starts.

- config: TrainConfig, the learning-rate schedule, and the one resolver of train configs;
- trainer: Trainer (stages, validation, checkpoints, resume, divergence) and ``train()``;
- loop: one stage's optimizer steps, an epoch at a time;
- run_folder: the run's files (config.json, metrics.jsonl, checkpoints, final weights, card, figures);
- ema, divergence: the weight average, and the checks and fallback for a run that diverges;
- runs: ``train_run``, what the CLI calls.
"""
