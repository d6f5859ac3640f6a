"""The catalog app: books, served over a JSON API and gRPC."""
