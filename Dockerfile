# One container serving the example project over HTTP (8000) and gRPC (50051).
#
#   docker build -t hybridserver-example .
#   docker run -p 8000:8000 -p 50051:50051 -v hybridserver-data:/data hybridserver-example
#
# tests/test_packaging.py runs this file's ENV, CMD and HEALTHCHECK commands against
# the installed wheel, so keep them in the simple forms it reads: one ENV line of
# KEY=value pairs, and CMD / HEALTHCHECK CMD as JSON arrays.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY hybridserver ./hybridserver
COPY project ./project
RUN pip install ".[example]" && rm -rf /src

RUN useradd --create-home --uid 10001 app \
    && mkdir /data \
    && chown app:app /data
USER app
WORKDIR /data
VOLUME /data

ENV PYTHONUNBUFFERED=1 DJANGO_SETTINGS_MODULE=project.settings HYBRIDSERVER_HOST=0.0.0.0 HYBRIDSERVER_PORT=8000 HYBRIDSERVER_GRPC_PORT=50051 DJANGO_ALLOWED_HOSTS=*

EXPOSE 8000 50051

HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['HYBRIDSERVER_PORT'], timeout=2)"]

# Apply migrations to the SQLite file in /data (or the DATABASE_URL given), then
# replace the shell with the server, so that it is PID 1 and receives SIGTERM.
CMD ["sh", "-c", "django-admin migrate --noinput && exec hybridserver run project.asgi"]
