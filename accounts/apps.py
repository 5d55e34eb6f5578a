from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from config import checks  # noqa: F401  (registers the deploy checks)

        from . import signals  # noqa: F401  (connects the token revocation)
