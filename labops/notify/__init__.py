"""Notifiers: one interface, Telegram and MQTT behind it.

``Notifier.send(notification)`` delivers one :class:`labops.reports.Notification` and returns a
:class:`Delivery`; it never raises for a delivery problem. It masks every registered secret
first, then hands the notification to the channel's ``deliver``. ``MultiNotifier`` sends to every
configured channel, so one channel down (Mosquitto stopped) never fails a flow as long as another
delivered.
"""

from labops.notify.base import Delivery, MultiNotifier, Notifier

__all__ = ["Delivery", "MultiNotifier", "Notifier"]
