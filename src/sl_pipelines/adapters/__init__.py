"""Adapters: the tracker file store, the SSH transport, the Slurm server and the local backend."""
