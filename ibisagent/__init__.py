"""ibisagent: segment biomedical objects from a text query by reasoning and clicking.

An open implementation of IBISAgent (Jiang et al., CVPR 2026). Heavy modules (torch, the
segmentation tools) are imported lazily so that `import ibisagent` stays cheap.
"""

__version__ = "0.1.0"
