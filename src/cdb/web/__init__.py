"""Static assets served or inlined by cdb (vendored libraries under vendor/)."""
