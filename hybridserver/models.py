"""The models of the hybridserver app, defined by the modules that use them."""

from hybridserver.auth.models import APIKey

__all__ = ["APIKey"]
