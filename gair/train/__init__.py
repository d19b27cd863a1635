"""Pretraining: the per-worker loop (``loop``), checkpoints (``checkpoint``), optimizer and
schedule (``optim``), export of consolidated weights (``export``) and the driver
(``trainer.run_pretraining``). The loop and the driver import Ray at the top; DeepSpeed is
imported inside the worker (it probes the accelerator on import)."""
