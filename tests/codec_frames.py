"""The streams the codec frames server sends: data only, so tests may import it
(the server itself loads pvaccess, which the test process must not)."""

FRAMES = 6  # distinct diffraction frames, sent raw first, then once per variant

# (codec, blosc settings) as NDPluginCodec publishes them
VARIANTS = [
    ("lz4", {}),
    ("blosc", {}),  # NDPluginCodec's defaults: blosclz, level 5, byte shuffle
    ("blosc", {"blosc_compressor": "lz4", "blosc_shuffle": "Bit"}),
    ("blosc", {"blosc_compressor": "lz4hc", "blosc_level": 9}),
    ("blosc", {"blosc_compressor": "zlib", "blosc_shuffle": "None"}),
    ("blosc", {"blosc_compressor": "zstd", "blosc_shuffle": "Bit"}),
    ("bslz4", {}),
]

# Codecs of float32 frames, counts with a dark subtracted (as NDProcess sends them), sent
# after the variants: read as the same counts
FLOAT_CODECS = ["None", "lz4", "bslz4"]

# Compressed frames that must still be refused, and the error kind each is counted as
BAD = {
    "lz4_corrupt": "decode", "blosc_corrupt": "decode", "bslz4_corrupt": "decode",
    "lz4_size": "decode", "blosc_size": "decode", "bslz4_size": "decode",
    "bslz4_bomb": "too_large",
}


def unique_ids(variant: int) -> range:
    """The uniqueIds of the raw frames (variant 0) and of each variant's (1, 2, ...)."""
    return range(1 + variant * FRAMES, 1 + (variant + 1) * FRAMES)
