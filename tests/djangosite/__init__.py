"""A tiny real Django site using django-db-file-storage, for docs/origins.md's Django route.

Run as a program (`python -m tests.djangosite DB_URL FILE NAME MIMETYPE`), never
imported by the test process: Django's settings are process-wide. It creates the
README's example model (`console.ConsolePicture`, table `console_consolepicture`)
on the database, saves FILE through a `FileField` whose storage is
`DatabaseFileStorage`, and prints one JSON line: the storage name, the URL the
storage gives for it, and the SHA-256 and headers of the package's own `get/` and
`download/` views' responses, which the edge must match byte for byte.
"""
