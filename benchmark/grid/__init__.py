"""The grid: a validated config, its plan of stages, and the runner that executes them into records."""
