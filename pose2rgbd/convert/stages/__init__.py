"""The stages of the conversion pipeline: Algorithm 1 (the time offset and the frame poses, `time_offset`) and
Algorithm 2 (self-supervised depth scaled to metres, `depth`)."""
