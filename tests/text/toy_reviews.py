"""Eight short movie reviews, four times over, with their labels: a labelled corpus that tiny text
models fit in seconds (shared by the text test modules)."""

import numpy as np

SENTENCES = ["a great and moving film", "a dull , lifeless mess", "the best movie of the year",
             "the worst script i have seen", "funny , warm and clever", "boring and far too long",
             "an absolute delight", "a tedious waste of time"] * 4
LABELS = np.array([1, 0] * 16)
