"""Example ebyd-bench plug-in: a defense that lives outside the benchmark's repository."""

from ebyd_plugin_example.finetune import PlainFineTune

__all__ = ["PlainFineTune"]
