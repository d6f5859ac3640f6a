"""The example project's URLs plus the benchmark's views under ``/bench/``."""

from __future__ import annotations

from django.urls import include, path

from bench import views

urlpatterns = [
    path("bench/echo", views.echo),
    path("bench/book-async", views.book_async),
    path("bench/wait", views.wait),
    path("bench/wait-sync", views.wait_sync),
    path("bench/book-sync", views.book_sync),
    path("", include("project.urls")),
]
