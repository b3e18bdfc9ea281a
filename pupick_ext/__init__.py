"""pupick: positive-unlabeled CNN particle picking for cryo-EM (engine)."""

__version__ = "0.1.0"
