"""What every format's runtime module may raise."""


class NotMeasurable(Exception):
    """A figure this host cannot measure (Core ML off macOS); the reason is reported instead of a number."""
