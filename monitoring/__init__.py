"""Online monitoring: prequential metrics, drift detectors, windowed statistics, reports."""
