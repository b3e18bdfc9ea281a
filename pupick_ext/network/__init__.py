"""The classifier: fully-convolutional architectures (``models``), the positive-unlabeled
objectives that train them (``objectives``), and the ``.pupick`` model file that stores a
trained network with its normalization and thresholds, loaded safely (``model_io``).
"""
