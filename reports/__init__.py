"""Leaderboard reports for ebyd-bench: self-contained HTML and standalone LaTeX tables."""

from .leaderboard import render_leaderboard

__all__ = ["render_leaderboard"]
