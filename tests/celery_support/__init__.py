"""Support code for the Celery acceptance test (``tests/test_celery.py``).

* :mod:`.app`: the Celery app (tasks and configuration), built from a
  :class:`~.app.CelerySettings`; :mod:`.worker_app` is the app ``celery -A
  celery_support.worker_app`` runs, with the settings taken from
  ``SLOTWAY_CELERY_*`` environment variables.
* :mod:`.transport`: kombu's Redis transport with a ``protocol`` transport
  option, so the broker side can be forced to RESP2.
* :mod:`.worker`: starts ``celery worker`` processes and stops or kills them.
* :mod:`.plugin`: pytest hooks (worker logs in failure reports, the
  throughput summary); :mod:`.report`: the throughput lines.
"""
