"""Everything pupick reads and writes: micrographs (MRC) and micrograph lists, STAR files,
coordinate files (Topaz text, RELION STAR, EMAN .box), the in-memory ``Picks`` table that
crosses every boundary, and atomic, verified file output (``fsio``). Depends on nothing in
the engine but ``errors`` and ``settings``.
"""
