"""scheduledbot: a Kubernetes operator that makes meeting bots join meetings on time."""

__version__ = "0.1.0"
