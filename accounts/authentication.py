"""`Authorization: Api-Key <key>`: programs authenticate as the key's owner."""

from __future__ import annotations

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework_simplejwt.authentication import JWTAuthentication

from . import selectors, services

KEYWORD = b"api-key"


class APIKeyAuthentication(authentication.BaseAuthentication):
    """Accepts a live key of an active user; any other Authorization header is
    left to the other authentication classes."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != KEYWORD:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Invalid Api-Key header: send `Authorization: Api-Key <key>`."
            )
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        api_key = selectors.live_api_key(raw)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid, revoked or expired API key.")
        if not api_key.user.is_active:
            raise exceptions.AuthenticationFailed("The API key's user is inactive.")
        services.note_api_key_use(api_key=api_key)
        return (api_key.user, api_key)

    def authenticate_header(self, request):
        return 'Api-Key realm="api"'


class APIKeyScheme(OpenApiAuthenticationExtension):
    target_class = APIKeyAuthentication
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>`, with a key from POST /api-keys.",
        }


class BearerAuthentication(JWTAuthentication):
    """SimpleJWT's `Authorization: Bearer <token>`, with the scheme read in
    any case: schemes are case-insensitive (RFC 9110), and some clients send
    `bearer`. SimpleJWT compares it byte for byte."""

    def get_raw_token(self, header: bytes):
        scheme, space, rest = header.partition(b" ")
        if scheme.lower() == b"bearer":
            header = b"Bearer" + space + rest
        return super().get_raw_token(header)


class BearerScheme(SimpleJWTScheme):
    target_class = "accounts.authentication.BearerAuthentication"
