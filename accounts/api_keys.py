"""`/api-keys`: create, list, show and revoke the API keys of the authenticated user."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, generics, permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ErrorSerializer
from config.pagination import NewestFirst
from tasks.api.serializers import StrictSerializer

from . import selectors, services
from .models import APIKey


class APIKeyCreateSerializer(StrictSerializer):
    name = serializers.CharField(
        max_length=50, help_text="What the key is for (shown in the list and the admin)."
    )
    expires_at = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="When the key stops working (ISO 8601, in the future); none: never.",
    )


class APIKeySerializer(serializers.ModelSerializer):
    expires_at = serializers.DateTimeField(source="expiry_date", allow_null=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = APIKey
        fields = ["prefix", "url", "name", "created", "expires_at", "last_used_at", "revoked"]
        read_only_fields = fields

    def get_url(self, api_key: APIKey) -> str:
        return f"/api-keys/{api_key.prefix}"


class NewAPIKeySerializer(APIKeySerializer):
    key = serializers.SerializerMethodField(
        help_text="The key itself, shown this once: send it as `Authorization: Api-Key <key>`."
    )

    class Meta(APIKeySerializer.Meta):
        fields = ["key", *APIKeySerializer.Meta.fields]
        read_only_fields = fields

    def get_key(self, api_key: APIKey) -> str:
        return self.context["key"]


class NotWithAnAPIKey(permissions.BasePermission):
    """A key cannot create or revoke keys: otherwise a leaked key could make
    itself a successor that outlives its revocation."""

    message = "API keys cannot create or revoke API keys; use a login's access token."

    def has_permission(self, request, view):
        if request.method in permissions.SAFE_METHODS:
            return True
        return not isinstance(request.auth, APIKey)


class NewestKeysFirst(NewestFirst):
    ordering = ("-created", "-prefix")


PREFIX_PARAMETER = OpenApiParameter(
    "prefix", OpenApiTypes.STR, OpenApiParameter.PATH, description="The key's prefix."
)
KEY_NOT_FOUND = OpenApiResponse(
    ErrorSerializer, description='"API key not found" (also for another user\'s key).'
)
KEY_FORBIDDEN = OpenApiResponse(
    ErrorSerializer, description="Authenticated with an API key, which cannot manage keys."
)


def get_own_api_key(request, prefix: str) -> APIKey:
    api_key = selectors.api_key_of(user=request.user, prefix=prefix)
    if api_key is None:
        raise exceptions.NotFound("API key not found")
    return api_key


class APIKeyListView(generics.GenericAPIView):
    permission_classes = [permissions.IsAuthenticated, NotWithAnAPIKey]
    serializer_class = APIKeySerializer
    pagination_class = NewestKeysFirst

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return APIKey.objects.none()
        return selectors.api_keys_of(user=self.request.user)

    @extend_schema(
        operation_id="api_keys_list",
        tags=["api keys"],
        summary="List your API keys (revoked and expired ones too, newest first)",
        responses={
            200: APIKeySerializer(many=True),
            400: OpenApiResponse(ErrorSerializer, description="A bad cursor or page size."),
        },
    )
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(APIKeySerializer(page, many=True).data)

    @extend_schema(
        operation_id="api_keys_create",
        tags=["api keys"],
        summary="Create an API key (the answer is the only time the key is shown)",
        request=APIKeyCreateSerializer,
        responses={
            201: NewAPIKeySerializer,
            403: KEY_FORBIDDEN,
            429: OpenApiResponse(
                ErrorSerializer, description="Too many unrevoked keys (API_KEYS_MAX_PER_USER)."
            ),
        },
        examples=[
            OpenApiExample(
                "A key for a nightly job",
                request_only=True,
                value={"name": "nightly import", "expires_at": "2030-01-01T00:00:00Z"},
            )
        ],
    )
    def post(self, request):
        serializer = APIKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        api_key, key = services.create_api_key(
            user=request.user,
            name=serializer.validated_data["name"],
            expires_at=serializer.validated_data.get("expires_at"),
        )
        return Response(
            NewAPIKeySerializer(api_key, context={"key": key}).data,
            status=status.HTTP_201_CREATED,
            # The body holds a credential no cache may keep.
            headers={"Cache-Control": "no-store", "Location": f"/api-keys/{api_key.prefix}"},
        )


class APIKeyDetailView(APIView):
    permission_classes = [permissions.IsAuthenticated, NotWithAnAPIKey]

    @extend_schema(
        operation_id="api_keys_retrieve",
        tags=["api keys"],
        summary="One of your API keys (never the key itself)",
        parameters=[PREFIX_PARAMETER],
        responses={200: APIKeySerializer, 404: KEY_NOT_FOUND},
    )
    def get(self, request, prefix: str):
        return Response(APIKeySerializer(get_own_api_key(request, prefix)).data)

    @extend_schema(
        operation_id="api_keys_revoke",
        tags=["api keys"],
        summary="Revoke an API key for good",
        parameters=[PREFIX_PARAMETER],
        responses={204: None, 403: KEY_FORBIDDEN, 404: KEY_NOT_FOUND},
    )
    def delete(self, request, prefix: str):
        services.revoke_api_key(api_key=get_own_api_key(request, prefix))
        return Response(status=status.HTTP_204_NO_CONTENT)
