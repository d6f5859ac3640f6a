from __future__ import annotations

from django.apps import AppConfig


class SocioBenchConfig(AppConfig):
    name = "bench.peers.socio_bench"
    label = "socio_bench"
