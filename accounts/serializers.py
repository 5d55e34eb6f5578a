from __future__ import annotations

from rest_framework import serializers


class LoginSerializer(serializers.Serializer):
    """Documentation of the login body; the view checks it itself, because a
    missing field must answer 401 with the seed's message, not 400."""

    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"})


class TokensSerializer(serializers.Serializer):
    Token = serializers.CharField(help_text="The access token (the seed's key).")
    access = serializers.CharField(help_text="The access token again, by its usual name.")
    refresh = serializers.CharField(help_text="Trade it at /token/refresh for new tokens.")
    token_type = serializers.CharField(help_text='Always "Bearer".')
    expires_in = serializers.IntegerField(help_text="Seconds until the access token expires.")


class RefreshSerializer(serializers.Serializer):
    refresh = serializers.CharField(help_text="A refresh token from /login or /token/refresh.")


class LogoutSerializer(serializers.Serializer):
    refresh = serializers.CharField(help_text="The refresh token to revoke.")


class MessageSerializer(serializers.Serializer):
    message = serializers.CharField()


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.CharField(allow_blank=True)
    is_staff = serializers.BooleanField()
    date_joined = serializers.DateTimeField()


def token_body(pair) -> dict:
    """The answer of /login and /token/refresh for an accounts.tokens.TokenPair."""
    return {
        "Token": pair.access,
        "access": pair.access,
        "refresh": pair.refresh,
        "token_type": "Bearer",
        "expires_in": pair.expires_in,
    }
