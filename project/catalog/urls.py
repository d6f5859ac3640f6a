from __future__ import annotations

from django.urls import path

from project.catalog import views

app_name = "catalog"

urlpatterns = [
    path("books/", views.book_list, name="book-list"),
    path("books/<int:pk>/", views.book_detail, name="book-detail"),
]
