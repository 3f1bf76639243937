from django.urls import include, path

urlpatterns = [path("files/", include("db_file_storage.urls"))]
