"""Picking and judging picks: whole-micrograph score maps from a network (``scoring``), peak
finding with non-maximum suppression (``nms``), precision, recall and average precision
against reference coordinates (``evaluation``), and the difference-of-Gaussians baseline
picker (``dog``, and ``baseline`` over micrograph lists).
"""
