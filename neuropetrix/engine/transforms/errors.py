"""The error every transform step raises when its configuration cannot be used."""


class TransformError(ValueError):
    """A transform step is wrongly configured; the message says which part."""
