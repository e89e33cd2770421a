"""What the metrics are built from but are not metrics themselves: dlib's gin files read into
hyperparameters, the GBT classifiers and scikit-learn 0.21's defaults that reproduce dlib's
numbers, FID's Inception network, and dlib's own modules imported for comparison."""
