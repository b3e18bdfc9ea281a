"""Built-in demonstration data and the ``pupick demo`` run: synthetic cryo-EM micrographs
with known particle positions (``synthetic``, behind ``generate_demo_data``) and the whole
train / extract / evaluate workflow on them (``demo``). Used by the demo, the tests, the
benchmarks and ``pretrained.build``; the method does not depend on it.
"""
