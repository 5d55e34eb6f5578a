from __future__ import annotations

from django.contrib.auth import authenticate
from django.utils.cache import add_never_cache_headers
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import RefreshToken

from config.errors import ErrorSerializer, error_body

from . import tokens
from .serializers import (
    LoginSerializer,
    LogoutSerializer,
    MeSerializer,
    MessageSerializer,
    RefreshSerializer,
    TokensSerializer,
    token_body,
)
from .throttles import LoginIPThrottle, LoginUsernameThrottle

REQUIRED = "Username and Password are required"
INVALID = "Invalid username or password"

TOO_MANY = OpenApiResponse(ErrorSerializer, description="Throttled; see Retry-After.")


class NoStoreMixin:
    """Answers carrying credentials must not be kept by any cache (browser,
    proxy): every answer of the view, errors included, is `no-store`."""

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        add_never_cache_headers(response)
        return response


class LoginView(NoStoreMixin, APIView):
    """`POST /login {"username", "password"}` -> `{"Token": <access JWT>, ...}`."""

    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = [LoginIPThrottle, LoginUsernameThrottle]

    @extend_schema(
        operation_id="login",
        tags=["accounts"],
        summary="Log in: trade a username and password for tokens",
        request=LoginSerializer,
        responses={
            200: TokensSerializer,
            401: OpenApiResponse(
                ErrorSerializer,
                description='"Username and Password are required", or wrong credentials '
                "or an inactive user.",
            ),
            429: TOO_MANY,
        },
        auth=[],
    )
    def post(self, request):
        user = user_of_credentials(request)
        if isinstance(user, Response):
            return user
        return Response(token_body(tokens.start_session(user)))


def user_of_credentials(request):
    """The user a login request's `{"username", "password"}` names, or the
    401 to answer (for /login and the page's session login alike)."""
    data = request.data if isinstance(request.data, dict) else {}
    username, password = data.get("username"), data.get("password")
    if not (isinstance(username, str) and isinstance(password, str)) or not (
        username.strip() and password
    ):
        return Response(
            error_body(REQUIRED, "not_authenticated"), status=status.HTTP_401_UNAUTHORIZED
        )
    # Django's backend refuses inactive users as it refuses bad passwords.
    user = authenticate(request._request, username=username, password=password)
    if user is None:
        return Response(
            error_body(INVALID, "authentication_failed"), status=status.HTTP_401_UNAUTHORIZED
        )
    return user


class TokenRefreshView(NoStoreMixin, APIView):
    """Trade a refresh token for a new access token and a new refresh token.

    Refresh tokens rotate: the one sent is blacklisted and cannot be used
    again (of several requests sending it at once, exactly one succeeds).
    No Bearer header is needed; the refresh token is the credential.
    """

    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = [LoginIPThrottle]

    def get_authenticate_header(self, request) -> str:
        # Without authentication classes DRF would turn a refused token into
        # a 403; a bad refresh token is a 401, like a bad access token.
        return 'Bearer realm="api"'

    @extend_schema(
        operation_id="token_refresh",
        tags=["accounts"],
        summary="Refresh tokens (rotating)",
        request=RefreshSerializer,
        responses={
            200: TokensSerializer,
            401: OpenApiResponse(
                ErrorSerializer,
                description="Invalid, expired or blacklisted refresh token, a session past "
                "JWT_SESSION_MAX_SECONDS, or an inactive user.",
            ),
            429: TOO_MANY,
        },
        auth=[],
    )
    def post(self, request):
        serializer = RefreshSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            pair = tokens.rotate(serializer.validated_data["refresh"])
        except tokens.SessionError as exc:
            raise exceptions.AuthenticationFailed(exc.message) from None
        return Response(token_body(pair))


class LogoutView(APIView):
    """Revoke a refresh token (blacklist it). Access tokens already issued stay
    valid until they expire, which is why they are short-lived."""

    @extend_schema(
        operation_id="logout",
        tags=["accounts"],
        summary="Log out: blacklist a refresh token",
        request=LogoutSerializer,
        responses={
            200: MessageSerializer,
            400: OpenApiResponse(
                ErrorSerializer, description="Missing, invalid or someone else's refresh token."
            ),
        },
    )
    def post(self, request):
        serializer = LogoutSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            refresh = RefreshToken(serializer.validated_data["refresh"])
        except TokenError as exc:
            raise exceptions.ValidationError({"refresh": [str(exc)]}) from exc
        if str(refresh.get(jwt_settings.USER_ID_CLAIM)) != str(request.user.pk):
            raise exceptions.ValidationError(
                {"refresh": ["This refresh token belongs to another user."]}
            )
        refresh.blacklist()
        return Response({"message": "Logged out"})


class MeView(APIView):
    @extend_schema(
        operation_id="me",
        tags=["accounts"],
        summary="The authenticated user",
        responses={200: MeSerializer},
    )
    def get(self, request):
        user = request.user
        return Response(
            MeSerializer(
                {
                    "id": user.pk,
                    "username": user.get_username(),
                    "email": user.email or "",
                    "is_staff": user.is_staff,
                    "date_joined": user.date_joined,
                }
            ).data
        )
