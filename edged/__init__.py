"""edged: the model daemon of a Jetson-class edge device."""

__version__ = "0.1.0"
