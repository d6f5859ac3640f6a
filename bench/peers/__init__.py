"""The peers of the benchmark, served from bench/.venv-peers (``bench/run peers``):
django-grpc's ``grpcserver`` and django-socio-grpc's ``grpcrunaioserver``, each with the
same database, model and RPCs as hybridserver."""
