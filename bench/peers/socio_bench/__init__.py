"""A django-socio-grpc app serving the benchmark's RPCs the socio way."""
