"""What a user may ask for as device and precision: the CLI's and the settings' choices, in a
module of their own so that parsing them needs no torch (lama.device imports it)."""

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16")
