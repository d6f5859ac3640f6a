"""Example Django project served by hybridserver."""
