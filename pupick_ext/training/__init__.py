"""Training, as free functions over one small state, in the order a run uses them.

``run.train_model`` is the entry. It builds a ``state.TrainState`` (``data``: labels,
hold-out and pi; ``initial``: the starting weights), runs ``loop.fit`` (epochs of
``step.train_step``, ``validate.validate`` and ``checkpoint.save_checkpoint``), tabulates
thresholds (``validate.threshold_table`` over ``thresholds``) and writes the model and its
files (``metadata``, ``outputs``). ``collectives`` are the rank helpers for torchrun runs.
"""
