"""What the RQ acceptance test (test_rq.py) enqueues; its worker imports this package."""
