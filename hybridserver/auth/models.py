"""API keys: each belongs to a user and is stored as a lookup prefix plus a SHA-256."""

from __future__ import annotations

import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from hybridserver.auth.keys import generate_key, hash_key

# A key's last_used_at is written at most once per this interval, so that a busy key does
# not cost a database write per request; "last used" is then accurate to the minute.
LAST_USED_RESOLUTION = datetime.timedelta(minutes=1)

_ATTEMPTS = 3


class APIKeyManager(models.Manager["APIKey"]):
    def create_key(
        self, user: Any, name: str, *, expires_at: datetime.datetime | None = None
    ) -> tuple[APIKey, str]:
        """Create a key for ``user``. Returns the saved ``APIKey`` and the key itself,
        which is not stored anywhere: show it to its owner now, or never."""
        api_key = self.model(user=user, name=name, expires_at=expires_at)
        return api_key, api_key.save_with_new_key()

    async def acreate_key(
        self, user: Any, name: str, *, expires_at: datetime.datetime | None = None
    ) -> tuple[APIKey, str]:
        from asgiref.sync import sync_to_async

        return await sync_to_async(self.create_key)(user, name, expires_at=expires_at)


class APIKey(models.Model):
    """A secret that authenticates its user over HTTP and gRPC until it expires or is
    revoked."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100, help_text="What the key is for, e.g. 'billing job'.")
    prefix = models.CharField(
        max_length=16,
        unique=True,
        editable=False,
        help_text="The start of the key, to recognise it by; not a secret.",
    )
    hashed_key = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Accurate to the minute."
    )
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Leave empty for a key that does not expire."
    )
    revoked = models.BooleanField(default=False, help_text="A revoked key is refused at once.")
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = APIKeyManager()

    class Meta:
        verbose_name = "API key"
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def assign_new_key(self) -> str:
        """Give this (unsaved) key a new secret; returns it. Only its hash is kept."""
        key, self.prefix = generate_key()
        self.hashed_key = hash_key(key)
        return key

    def save_with_new_key(self) -> str:
        """Save with a new secret, retrying in the unlikely event of a prefix collision."""
        for attempt in range(_ATTEMPTS):
            key = self.assign_new_key()
            try:
                with transaction.atomic():
                    self.save()
            except IntegrityError:
                if attempt == _ATTEMPTS - 1 or not self._prefix_taken():
                    raise
            else:
                return key
        raise AssertionError("unreachable")

    def _prefix_taken(self) -> bool:
        return type(self).objects.filter(prefix=self.prefix).exists()

    def is_usable(self, now: datetime.datetime) -> bool:
        """Not revoked and not expired at ``now``."""
        return not self.revoked and (self.expires_at is None or now < self.expires_at)

    def revoke(self) -> None:
        """Refuse this key from the next request on."""
        if not self.revoked:
            self.revoked, self.revoked_at = True, timezone.now()
            self.save(update_fields=["revoked", "revoked_at"])

    async def arevoke(self) -> None:
        if not self.revoked:
            self.revoked, self.revoked_at = True, timezone.now()
            await self.asave(update_fields=["revoked", "revoked_at"])

    async def atouch(self, now: datetime.datetime) -> None:
        """Record a use, at most once per :data:`LAST_USED_RESOLUTION`."""
        if self.last_used_at is None or now - self.last_used_at >= LAST_USED_RESOLUTION:
            self.last_used_at = now
            await type(self).objects.filter(pk=self.pk).aupdate(last_used_at=now)
