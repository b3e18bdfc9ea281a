"""Fourier-cropping downsampling: the ideal anti-aliasing low-pass, exact for factor 1.

Sample 0 stays at the same place, so a working-grid coordinate c maps back to the
original grid as c * (original size / working size) along each axis.
"""

from __future__ import annotations

import numpy as np
import torch


def working_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    """Size of the image after downsampling by ``factor`` (at least 1 x 1)."""
    return (max(1, int(round(shape[0] / factor))), max(1, int(round(shape[1] / factor))))


def fourier_crop(image: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Resample a 2-D image to ``out_shape`` (smaller or equal) by cropping its spectrum.

    The mean (DC) is preserved; frequencies beyond the new Nyquist are removed, so
    nothing aliases. Odd and even sizes are both handled.
    """
    rows, cols = image.shape
    h, w = out_shape
    if (h, w) == (rows, cols):
        return np.array(image, dtype=np.float32, copy=True)
    if h > rows or w > cols:
        raise ValueError("fourier_crop only shrinks images")
    spectrum = torch.fft.rfft2(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)))
    top = (h + 1) // 2
    bottom = h // 2
    kept_rows = torch.cat([spectrum[:top], spectrum[rows - bottom:]], dim=0) if bottom else spectrum[:top]
    kept = kept_rows[:, : w // 2 + 1]
    out = torch.fft.irfft2(kept, s=(h, w)) * (h * w / (rows * cols))
    return out.numpy().astype(np.float32, copy=False)


def fourier_pad(image: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Resample a 2-D image to a larger ``out_shape`` by zero-padding its spectrum (the inverse)."""
    rows, cols = image.shape
    h, w = out_shape
    spectrum = torch.fft.rfft2(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)))
    padded = torch.zeros((h, w // 2 + 1), dtype=spectrum.dtype)
    top, bottom = (rows + 1) // 2, rows // 2
    ncol = cols // 2 + 1
    padded[:top, :ncol] = spectrum[:top]
    if bottom:
        padded[h - bottom:, :ncol] = spectrum[rows - bottom:]
    out = torch.fft.irfft2(padded, s=(h, w)) * (h * w / (rows * cols))
    return out.numpy().astype(np.float32, copy=False)


def downsample(image: np.ndarray, factor: float) -> tuple[np.ndarray, tuple[float, float]]:
    """Downsample by ``factor``; returns the image and the exact (x, y) scale back to the original grid."""
    out_shape = working_shape(image.shape, factor)
    small = fourier_crop(image, out_shape)
    return small, (image.shape[1] / out_shape[1], image.shape[0] / out_shape[0])
