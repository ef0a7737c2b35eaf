"""The edge half of the IoT multiplexing gateway: many MQTT devices in, a few links out.

Devices connect to ``LISTEN`` as they would to a broker (MQTT 3.1.1 or 5.0, any
QoS). Each device connection becomes one stream of an smux link (see
``filters/smux.py``); at most ``MAX_UPSTREAM`` links go to the cloud gateway at
``CLOUD`` (``scripts/mqtt_cloud.py``), which splits the streams again and keeps
one broker session per device. The edge does not decode MQTT: it carries each
device's bytes, with per-device flow control, so a slow device never holds up the
others on the same link.

When a device drops, its stream ends and the cloud closes that device's broker
connection without a DISCONNECT, so the broker publishes the device's last will.
When a link to the cloud breaks, the devices on it are disconnected (the cloud
ends their broker sessions with a clean DISCONNECT, so no will is published for
devices that are fine); devices reconnect as MQTT clients do, and new links are
opened, with backoff while the cloud does not answer.

Run it (with a cloud gateway and a broker; ``examples/iot-gateway`` runs all
three)::

    CLOUD=127.0.0.1:9883 trioxy run scripts/mqtt_edge.py

Environment variables (a bad value stops the script at load with one line
``mqtt_edge.py:LINE: NAME=value: reason``, exit status 2):

``LISTEN``          where devices connect, ``host:port``; default ``127.0.0.1:1884``
``CLOUD``           the cloud gateway, ``host:port``; default ``127.0.0.1:9883``
``MAX_UPSTREAM``    links to the cloud at most; default ``4``
``MAX_DEVICES``     device connections at once (more wait in the backlog), or
                    ``none``; default ``none``
``IDLE_TIMEOUT``    seconds a device may stay silent before it is disconnected,
                    or ``none`` (its MQTT keep-alive pings count as traffic);
                    default ``300``
``CONNECT_TIMEOUT`` seconds to open a link to the cloud; default ``5``
"""

from __future__ import annotations

from pipeline import Context, Proxy
from pipeline.address import format_address
from pipeline.settings import address, count, optional, seconds, setting

LISTEN = setting("LISTEN", "127.0.0.1:1884", address)
CLOUD = setting("CLOUD", "127.0.0.1:9883", address)
MAX_UPSTREAM = setting("MAX_UPSTREAM", "4", count)
MAX_DEVICES = setting("MAX_DEVICES", "none", optional(count))
IDLE_TIMEOUT = setting("IDLE_TIMEOUT", "300", optional(seconds))
CONNECT_TIMEOUT = setting("CONNECT_TIMEOUT", "5", seconds)


def device_metadata(ctx: Context) -> dict[str, str]:
    """Sent with the device's stream: the cloud logs it and can route on it."""
    return {"device": format_address(*ctx.remote[:2])}


proxy = Proxy()
(
    proxy.listen(LISTEN, max_connections=MAX_DEVICES, idle_timeout=IDLE_TIMEOUT)
    .connect_smux(metadata=device_metadata, max_links=MAX_UPSTREAM)
    # The links are long-lived: smux pings keep them alive and detect dead ones.
    .to(lambda p: p.connect(CLOUD, connect_timeout=CONNECT_TIMEOUT, idle_timeout=None))
)
