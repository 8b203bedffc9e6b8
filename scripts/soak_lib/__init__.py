"""The chaos soak of scripts/soak: the stack it starts, the load it sends, the faults it causes, the checks it runs."""
