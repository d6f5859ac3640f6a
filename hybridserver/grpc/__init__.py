"""gRPC side of hybridserver: the server wrapper, handler adapters, health and errors."""
