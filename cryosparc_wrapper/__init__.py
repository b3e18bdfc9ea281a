"""cryoSPARC adapter for pupick (through cryosparc-tools)."""
