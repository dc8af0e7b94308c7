"""How a delivery failed, in the terms the job queue acts on."""
from __future__ import annotations


class DeliveryError(Exception):
    """A destination did not take what we sent. `permanent`: the same message will be refused again
    (it is parked for an operator); `retry_after`: seconds the destination asked us to wait."""

    def __init__(self, message: str, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class AddressRefused(DeliveryError):
    """The recipient's address (e-mail, phone number) is refused for good: mark it, do not retry."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)
