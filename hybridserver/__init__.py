"""Serve a Django project over REST and gRPC from one process on one asyncio event loop."""

__version__ = "0.1.0"
