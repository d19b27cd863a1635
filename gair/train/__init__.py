"""Pretraining: the per-worker loop (``loop``), checkpoints (``checkpoint``), optimizer and
schedule (``optim``), export of consolidated weights (``export``) and the driver
(``trainer.run_pretraining``). Ray and DeepSpeed are imported inside functions."""
