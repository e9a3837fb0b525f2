"""The app ``celery -A celery_support.worker_app`` runs: settings from ``SLOTWAY_CELERY_*``.

See :meth:`celery_support.app.CelerySettings.env`.  Kept apart from
:mod:`celery_support.app` so that importing that module (as the test process
does) needs no environment variables.
"""

from celery_support.app import CelerySettings, make_app

app = make_app(CelerySettings.from_env())
