from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "tests.djangosite.console"
    label = "console"  # the table is console_consolepicture, as in the package's README
