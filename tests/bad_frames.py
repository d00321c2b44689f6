"""The frames the bad frame server sends, by kind: data only, so tests may import it
(the server itself loads pvaccess, which the test process must not)."""

# (kind of fault or "good", how to make the frame) in publishing order
FRAMES = ["good", "rank", "too_small", "pixel_type", "empty", "good", "no_colormode_3d",
          "signed_ok", "good"]

# Every malformed kind the reliability suite tries, between good frames. A name ending
# in "_ok" is a frame a detector may legitimately send: it must be reconstructed.
FAULT_FRAMES = {
    "rank_1d": "rank", "rank": "rank", "zero_size": "empty", "empty": "empty",
    "huge_ok": None, "huge_claimed": "too_large", "pixel_type": "pixel_type",
    "boolean_pixels": "pixel_type", "signed_ok": None, "signed16_ok": None, "float_ok": None,
    "lz4_garbage": "decode", "unknown_codec": "decode", "lz4_bomb": "too_large",
    "size_mismatch": "decode", "no_unique_id": "unique_id", "no_attributes_ok": None,
    "too_small": "too_small",
}
