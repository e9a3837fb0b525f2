"""kombu's Redis transport, plus a ``protocol`` transport option.

kombu (5.7) builds its redis-py connection pools from a fixed list of
parameters and has no way to choose the RESP version: every broker
connection uses redis-py's default, which since redis-py 8 is RESP3
(``HELLO 3``).  The result backend needs no help (celery passes URL query
arguments through, so ``redis://host:port/0?protocol=2`` works there).

To run the broker side over RESP2 the app sets::

    broker_transport = "celery_support.transport:Transport"
    broker_transport_options = {"protocol": 2, ...}

Nothing else differs from ``kombu.transport.redis.Transport``; without the
option (the RESP3 runs do not use this class at all) it behaves identically.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    """A kombu Redis channel whose connection pools pass ``protocol`` to redis-py."""

    from_transport_options = kombu_redis.Channel.from_transport_options + ("protocol",)

    #: RESP version for every connection of this channel; None = redis-py's default.
    protocol = None

    def _connparams(self, asynchronous=False):
        params = super()._connparams(asynchronous=asynchronous)
        if self.protocol is not None:
            params["protocol"] = int(self.protocol)
        return params


class Transport(kombu_redis.Transport):
    """``kombu.transport.redis.Transport`` using :class:`Channel`."""

    Channel = Channel
