"""ebyd-bench: an open benchmark of backdoor defenses built around "Expose Before You Defend"."""

__version__ = "0.1.0"
