"""Real-time serving: a prediction API over the online learner, with an online feature store."""
