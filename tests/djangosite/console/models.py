"""django-db-file-storage's README example models."""
from django.db import models


class ConsolePicture(models.Model):
    bytes = models.TextField()
    filename = models.CharField(max_length=255)
    mimetype = models.CharField(max_length=50)


class Console(models.Model):
    name = models.CharField(max_length=100)
    picture = models.FileField(upload_to="console.ConsolePicture/bytes/filename/mimetype", blank=True, null=True)
