"""The cloud half of the IoT multiplexing gateway: links in, one broker session per device.

Edge gateways (``scripts/mqtt_edge.py``) connect to ``LISTEN`` and carry many
device sessions over each link (smux streams, see ``filters/smux.py``). The cloud
gateway splits every link into its device streams and gives each device its own
connection to the broker at ``BROKER``, so the broker sees each device as if it
had connected directly: its client id, clean or persistent session, QoS 1 and 2
flows, retained messages, keep-alive and last will all behave as usual.

``track_mqtt_session`` (``filters/mqtt_session.py``) ends each broker session the
right way: when a device drops, without DISCONNECT (the broker publishes its
will); when the link from the edge breaks, with a clean DISCONNECT (the device is
fine, so no will), after which the edge disconnects the device and it reconnects.

Run it (``examples/iot-gateway`` runs edge, cloud and a mosquitto broker)::

    BROKER=127.0.0.1:1883 trioxy run scripts/mqtt_cloud.py

Environment variables (a bad value stops the script at load with one line
``mqtt_cloud.py:LINE: NAME=value: reason``, exit status 2):

``LISTEN``           where edge gateways connect, ``host:port``; default
                     ``127.0.0.1:9883``
``BROKER``           the MQTT broker, ``host:port``; default ``127.0.0.1:1883``
``MAX_STREAMS``      device streams per link at most; default ``10000``
``CONNECT_TIMEOUT``  seconds to connect to the broker; default ``5``
``MAX_PACKET_SIZE``  bytes of one MQTT packet from a device at most; default
                     ``1048576``
"""

from __future__ import annotations

from pipeline import Proxy
from pipeline.settings import address, count, seconds, setting

LISTEN = setting("LISTEN", "127.0.0.1:9883", address)
BROKER = setting("BROKER", "127.0.0.1:1883", address)
MAX_STREAMS = setting("MAX_STREAMS", "10000", count)
CONNECT_TIMEOUT = setting("CONNECT_TIMEOUT", "5", seconds)
MAX_PACKET_SIZE = setting("MAX_PACKET_SIZE", "1048576", count)

proxy = Proxy()
(
    # A link is long-lived: the edge's smux pings keep it busy, and a dead one is
    # detected by the missing pings, not by an idle timeout.
    proxy.listen(LISTEN, idle_timeout=None)
    .accept_smux(max_streams=MAX_STREAMS)
    .to(
        lambda p: p.track_mqtt_session(max_packet_size=MAX_PACKET_SIZE).connect(
            BROKER, connect_timeout=CONNECT_TIMEOUT, idle_timeout=None
        )
    )
)
