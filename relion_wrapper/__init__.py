"""RELION External-job adapter for pupick."""
