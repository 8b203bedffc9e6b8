"""Parley: self-hosted transcription, speaker labelling, summaries and chat for recorded conversations."""

__version__ = "0.1.0"
