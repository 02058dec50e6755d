"""Training: the segmentation tool's click path, and (with extras) the agent policies."""
