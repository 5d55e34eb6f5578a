"""The submit baseline: the least a DRF endpoint with the same JWT
authentication can do to record a task, one INSERT of a task row, with no
validation, no owner's lock, no per-user cap, no fairness turn and no
wake-up for the clusters."""

from django.utils import timezone
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from tasks.models import Task


class BareInsertView(APIView):
    def post(self, request):
        now = timezone.now()
        task = Task.objects.create(
            owner=request.user, type="bench.noop", timeout=60, created_at=now, updated_at=now
        )
        return Response({"task_id": task.pk}, status=status.HTTP_202_ACCEPTED)
