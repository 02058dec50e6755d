"""The segmentation tool's training: its click-trained prompt path (recipe), its held-out evaluation
(evaluate) and `ibisagent train tool` (pipeline)."""
