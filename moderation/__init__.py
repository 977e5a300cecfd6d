"""Multimodal content moderation and copyright service."""

__version__ = "0.1.0"
