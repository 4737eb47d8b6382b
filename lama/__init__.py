"""The LaMa inpainting engine: model, checkpoints, backends, codecs, CLI and bench."""

from lama import opencv_caps

# Before any module of the package imports cv2: OpenCV reads its decode caps when it loads.
opencv_caps.apply()
