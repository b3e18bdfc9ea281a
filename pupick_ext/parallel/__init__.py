"""Running as more than one process or on an accelerator: ranks from torchrun, srun or mpirun
and the file-based coordination between them (``distributed``), device, thread and
mixed-precision selection (``device``), and SIGTERM/SIGINT as a polite stop request
(``signals``).
"""
