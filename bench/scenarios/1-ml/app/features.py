"""Feature engineering on a synthetic frame."""

import numpy as np
import pandas as pd


def load_frame(rows=1000, seed=7):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, rows),
            "income": rng.lognormal(10, 1, rows),
            "visits": rng.poisson(3, rows),
        }
    )
    frame["spend_per_visit"] = frame["income"] / (frame["visits"] + 1)
    frame["label"] = (frame["spend_per_visit"] > frame["spend_per_visit"].median()).astype(int)
    return frame
