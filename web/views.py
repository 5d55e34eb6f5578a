"""The page for users at `/`, and the session login behind it.

The page is a template and one script; everything it shows comes from the
JSON API. It logs in with a session cookie rather than a token because
EventSource (the live updates) cannot send an Authorization header; the API
accepts that cookie through DRF's SessionAuthentication, which enforces
CSRF on unsafe methods.
"""

from __future__ import annotations

from django.contrib.auth import login, logout
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt, ensure_csrf_cookie
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.serializers import LoginSerializer, MessageSerializer
from accounts.throttles import LoginIPThrottle, LoginUsernameThrottle
from accounts.views import TOO_MANY, NoStoreMixin, user_of_credentials
from config.errors import ErrorSerializer, error_body

# The page loads nothing but its own script and stylesheet, and runs no
# inline code: a script injected into the page would not run.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)

CSRF_FAILED = OpenApiResponse(
    ErrorSerializer, description="No CSRF token, or a wrong one (X-CSRFToken header)."
)


# Exempt from the CSRF middleware: the page only reads, and any other method
# gets the API's JSON 405 instead of Django's HTML CSRF failure page.
@csrf_exempt
@never_cache
@ensure_csrf_cookie
def page(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        response: HttpResponse = JsonResponse(
            error_body("Method not allowed.", "method_not_allowed"), status=405
        )
        response["Allow"] = "GET, HEAD"
        return response
    response = render(request, "web/page.html")
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


def enforce_csrf(request) -> None:
    """Refuse a request without the page's CSRF token (403, permission_denied).

    A login needs it as much as any other POST: without it, another site could
    log a visitor in to an account of its choosing."""
    SessionAuthentication().enforce_csrf(request)


class SessionLoginView(NoStoreMixin, APIView):
    """`POST /ui/login {"username", "password"}`: the page's login. It sets the
    session cookie instead of answering with tokens, and counts against the
    same throttles as /login and the admin's login."""

    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = [LoginIPThrottle, LoginUsernameThrottle]

    def initial(self, request, *args, **kwargs):
        # Before the throttles: a forged request never reaches a password check.
        enforce_csrf(request)
        super().initial(request, *args, **kwargs)

    @extend_schema(
        operation_id="ui_login",
        tags=["accounts"],
        summary="Log in the page at / (session cookie; needs the CSRF token)",
        request=LoginSerializer,
        responses={
            200: inline_serializer("SessionUser", {"username": serializers.CharField()}),
            401: OpenApiResponse(
                ErrorSerializer,
                description='"Username and Password are required", or wrong credentials '
                "or an inactive user.",
            ),
            403: CSRF_FAILED,
            429: TOO_MANY,
        },
        auth=[],
    )
    def post(self, request):
        user = user_of_credentials(request)
        if isinstance(user, Response):
            return user
        # A new session key and CSRF token: none chosen before the login survives it.
        login(request._request, user)
        return Response({"username": user.get_username()})


class SessionLogoutView(NoStoreMixin, APIView):
    """`POST /ui/logout`: ends the page's session (a no-op without one)."""

    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = []

    def initial(self, request, *args, **kwargs):
        enforce_csrf(request)
        super().initial(request, *args, **kwargs)

    @extend_schema(
        operation_id="ui_logout",
        tags=["accounts"],
        summary="Log out the page at / (ends the session; needs the CSRF token)",
        request=None,
        responses={200: MessageSerializer, 403: CSRF_FAILED},
        auth=[],
    )
    def post(self, request):
        logout(request._request)
        return Response({"message": "Logged out"})
