"""API keys in the Django admin.

Adding a key shows it once, on the page that answers the form, and nowhere else: it is
not put in a message (which would travel in a cookie or sit in the session table), and
only its hash is saved. Keys are revoked with the "revoked" box or the list action.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from hybridserver.auth.models import APIKey


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "user", "created_at", "last_used_at", "expires_at", "revoked")
    list_filter = ("revoked",)
    search_fields = ("name", "prefix", "user__username")
    raw_id_fields = ("user",)
    actions = ("revoke_keys",)

    def get_fields(self, request: HttpRequest, obj: APIKey | None = None) -> Any:
        if obj is None:
            return ("user", "name", "expires_at")
        return (
            "user",
            "name",
            "prefix",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked",
            "revoked_at",
        )

    def get_readonly_fields(self, request: HttpRequest, obj: APIKey | None = None) -> Any:
        if obj is None:
            return ()
        fields = ("user", "prefix", "created_at", "last_used_at", "revoked_at")
        # A revoked key stays revoked: issue a new one instead.
        return (*fields, "revoked") if obj.revoked else fields

    def save_model(self, request: HttpRequest, obj: APIKey, form: Any, change: bool) -> None:
        if not change:
            # Kept on the instance only until response_add shows it.
            obj._new_key = obj.save_with_new_key()  # type: ignore[attr-defined]
            return
        if "revoked" in form.changed_data and obj.revoked:
            obj.revoked_at = timezone.now()
        super().save_model(request, obj, form, change)

    def response_add(
        self, request: HttpRequest, obj: APIKey, post_url_continue: str | None = None
    ) -> HttpResponse:
        key = obj.__dict__.pop("_new_key", None)
        if key is None:
            return super().response_add(request, obj, post_url_continue)
        opts = self.opts
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "opts": opts,
            "original": obj,
            "key": key,
            "change_url": reverse(
                f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]
            ),
            "changelist_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
        }
        return TemplateResponse(request, "admin/hybridserver/apikey/created.html", context)

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        count = queryset.filter(revoked=False).update(revoked=True, revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} API key(s).", messages.SUCCESS)
