from __future__ import annotations

from django.conf import settings
from django.contrib.auth import authenticate
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.tokens import RefreshToken

REQUIRED = "Username and Password are required"
INVALID = "Invalid username or password"


class LoginView(APIView):
    """`POST /login {"username", "password"}` -> `{"Token": <access JWT>, ...}`."""

    permission_classes = [AllowAny]
    authentication_classes = []

    def post(self, request):
        data = request.data if isinstance(request.data, dict) else {}
        username, password = data.get("username"), data.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            return Response({"error": REQUIRED}, status=status.HTTP_401_UNAUTHORIZED)
        if not username.strip() or not password:
            return Response({"error": REQUIRED}, status=status.HTTP_401_UNAUTHORIZED)
        # Django's backend refuses inactive users as it refuses bad passwords.
        user = authenticate(request, username=username, password=password)
        if user is None:
            return Response({"error": INVALID}, status=status.HTTP_401_UNAUTHORIZED)
        refresh = RefreshToken.for_user(user)
        access = str(refresh.access_token)
        return Response(
            {
                "Token": access,
                "access": access,
                "refresh": str(refresh),
                "token_type": "Bearer",
                "expires_in": int(settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"].total_seconds()),
            }
        )
