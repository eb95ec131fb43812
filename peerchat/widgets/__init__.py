"""Reusable widgets of the app: the device list, a chat session and its transfers."""

from .devices import DeviceList
from .session import SessionView
from .transfers import TransferList, TransferRow

__all__ = ["DeviceList", "SessionView", "TransferList", "TransferRow"]
