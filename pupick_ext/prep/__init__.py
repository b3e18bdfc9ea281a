"""From micrograph files to normalized working images: Fourier-crop downsampling to the
working scale (``downsample``), the two-component GMM normalization (``normalize``), and
``preprocess``, which reads, downsamples, normalizes and caches. Below the network: it
knows nothing of models or training.
"""
