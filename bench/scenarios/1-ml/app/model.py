"""Training and scoring."""

from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.pipeline import make_pipeline

FEATURES = ["age", "income", "visits", "spend_per_visit"]


def train(frame):
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=200))
    model.fit(frame[FEATURES], frame["label"])
    return model


def score(model, frame):
    return float(model.score(frame[FEATURES], frame["label"]))
