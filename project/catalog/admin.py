from __future__ import annotations

from django.contrib import admin

from project.catalog.models import Book


@admin.register(Book)
class BookAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "author", "year", "isbn", "updated_at")
    list_filter = ("year",)
    search_fields = ("title", "author", "isbn")
    readonly_fields = ("created_at", "updated_at")
