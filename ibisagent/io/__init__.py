"""Reading and writing images and masks, robustly and atomically."""

from ibisagent.io.images import load_image, load_mask, save_mask_png, save_png, to_rgb_uint8

__all__ = ["load_image", "load_mask", "save_mask_png", "save_png", "to_rgb_uint8"]
