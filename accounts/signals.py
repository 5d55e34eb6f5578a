"""Revoke a user's refresh tokens when their credentials change.

A password change, a deactivation or a deletion blacklists every refresh
token the user holds, so a stolen token dies with the old password. Access
tokens are not tracked: they expire within JWT_ACCESS_SECONDS, and the
authentication refuses inactive or deleted users at once anyway.
"""

from __future__ import annotations

from django.conf import settings
from django.db.models.signals import post_save, pre_delete, pre_save
from django.dispatch import receiver

from . import tokens

_REVOKE = "_revoke_refresh_tokens"


@receiver(pre_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="accounts.revoke.pre_save")
def note_credential_change(sender, instance, raw=False, update_fields=None, **kwargs) -> None:
    if raw or instance._state.adding or instance.pk is None:
        return
    if update_fields is not None and not {"password", "is_active"} & set(update_fields):
        return  # e.g. last_login at each admin login: no query
    before = sender._default_manager.filter(pk=instance.pk).values("password", "is_active").first()
    if before is None:
        return
    # Django re-hashes a password in place when its hasher is upgraded, at a
    # login (set_password, then _password reset, then save of the password
    # alone): the same password, so no revocation.
    rehash = update_fields is not None and set(update_fields) == {"password"}
    rehash = rehash and getattr(instance, "_password", None) is None
    password_changed = before["password"] != instance.password and not rehash
    deactivated = before["is_active"] and not instance.is_active
    setattr(instance, _REVOKE, password_changed or deactivated)


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="accounts.revoke.post_save")
def revoke_after_credential_change(sender, instance, **kwargs) -> None:
    if getattr(instance, _REVOKE, False):
        setattr(instance, _REVOKE, False)
        tokens.revoke_all(instance)


@receiver(pre_delete, sender=settings.AUTH_USER_MODEL, dispatch_uid="accounts.revoke.pre_delete")
def revoke_before_deletion(sender, instance, **kwargs) -> None:
    # Before the delete sets the tokens' user to NULL and they can no longer be found.
    tokens.revoke_all(instance)
